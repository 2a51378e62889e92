"""A self-contained tour: a local TLS upstream, rr in a throwaway RR_HOME, a few calls, a table of what happened."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rr_addon.testing.certs import make_pki
from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.upstream import Upstream

UPSTREAM_SECRET = "sk_demo_upstream_secret"
POLICY = """
targets:
  - name: payments
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true   # the demo upstream runs on loopback
    credentials:
      - {{name: live, kind: bearer, secret: {secret}}}
proxies:
  - name: billing-agent
    targets: [{{target: payments, credential: live}}]
    credentials:
      - {{name: agent-1, auth: api_key, secret: demo-agent-key}}
"""


def main() -> None:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="rr-demo-") as tmp:
        home = Path(tmp)
        pki = make_pki(home / "upstream-pki")
        with Upstream(pki) as up:
            prepare_home(home, POLICY.format(port=up.port, secret=UPSTREAM_SECRET))
            console.print(f"[bold]rr demo[/bold]: upstream https://127.0.0.1:{up.port}, RR_HOME {home}")
            with ProxyProcess(home, upstream_ca=pki.ca_cert) as proxy:
                verify = ssl.create_default_context(cafile=str(proxy.ca))
                calls = [
                    ("governed call", proxy.url("billing-agent", "demo-agent-key"), f"https://127.0.0.1:{up.port}/v1/charges"),
                    ("wrong caller key", proxy.url("billing-agent", "not-the-key"), f"https://127.0.0.1:{up.port}/v1/charges"),
                    ("no caller key", proxy.url(), f"https://127.0.0.1:{up.port}/v1/charges"),
                    ("host that is no target", proxy.url("billing-agent", "demo-agent-key"), f"https://localhost:{up.port}/v1/charges"),
                ]
                table = Table(title="what happened", title_justify="left")
                for col in ("call", "status", "rr code", "upstream saw Authorization", "caller saw"):
                    table.add_column(col)
                for name, proxy_url, url in calls:
                    before = len(up.received)
                    with httpx.Client(proxy=proxy_url, verify=verify, timeout=10) as c:
                        r = c.get(url)
                    got = up.received[before:]
                    seen = got[0].header("Authorization") if got else "(nothing forwarded)"
                    code = r.headers.get("rr-proxy-code", "")
                    caller = r.json().get("error", {}).get("message", "") if code else f"echo, secret shown as {r.json()['headers'].get('Authorization')}"
                    style = "green" if r.status_code == 200 else "red"
                    table.add_row(name, f"[{style}]{r.status_code}[/{style}]", code, escape(seen), escape(caller))
                console.print(table)
                console.print(f"The secret {UPSTREAM_SECRET!r} reached the upstream only; callers and flows saw a placeholder.")


if __name__ == "__main__":
    main()
