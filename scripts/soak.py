"""A bounded soak: N mixed requests (allowed, denied, throttled, filtered,
unauthenticated) through one rr proxy. Reports unexpected outcomes (must be
0), the proxy's memory over the run (must stay flat) and the audit trail's
record count after a clean shutdown (must equal the request count).

    .venv/bin/python scripts/soak.py --requests 100000 --concurrency 8

A small run of it is part of the test suite (tests/e2e/test_soak.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rr_addon.testing.certs import make_pki  # noqa: E402
from rr_addon.testing.home import prepare_home  # noqa: E402
from rr_addon.testing.proxy import ProxyProcess  # noqa: E402
from rr_addon.testing.upstream import Upstream  # noqa: E402

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_soak_SECRET}}]
proxies:
  - name: soak
    targets: [{{target: api}}]
    rules: [{{name: no-deletes, effect: deny, methods: [DELETE]}}]
    filters: [{{destroy: ["$.data[*].card"]}}]
    meters:
      - {{name: throttled, limits: {{day: 10}}, when: {{path: "^/throttled/"}}}}
      - {{name: all}}
    credentials: [{{name: c, auth: api_key, secret: KEY_soak}}]
"""

# (kind, method, path, expected status); the mix repeats every 20 requests
MIX = (
    [("allowed", "GET", "/anything/ok", 200)] * 10
    + [("denied", "DELETE", "/anything/x", 403)] * 3
    + [("throttled", "GET", "/throttled/x", 429)] * 2
    + [("filtered", "GET", "/bytes/2000", 200)] * 3
    + [("unauthenticated", "GET", "/anything/x", 401)] * 2
)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def run_soak(requests: int, concurrency: int, workdir: Path) -> dict:
    pki = make_pki(workdir / "pki")
    with Upstream(pki) as up:
        home = prepare_home(workdir / "home", POLICY.format(port=up.port))
        proxy = ProxyProcess(home, upstream_ca=pki.ca_cert, args=["--set", "flow_detail=0"]).start()
        counter = itertools.count()
        outcomes: Counter = Counter()
        unexpected: list[str] = []
        lock = threading.Lock()
        rss: list[tuple[int, int]] = []
        verify = ssl.create_default_context(cafile=str(proxy.ca))

        def worker() -> None:
            clients = {
                True: httpx.Client(proxy=proxy.url("soak", "KEY_soak"), verify=verify, timeout=30),
                False: httpx.Client(proxy=proxy.url("soak", "wrong-key"), verify=verify, timeout=30),
            }
            try:
                while (i := next(counter)) < requests:
                    kind, method, path, expected = MIX[i % len(MIX)]
                    if kind == "throttled" and i < len(MIX) * 5:
                        expected = None  # the first ten throttled requests are admitted
                    try:
                        r = clients[kind != "unauthenticated"].request(method, f"https://127.0.0.1:{up.port}{path}")
                        ok = r.status_code == expected if expected else r.status_code in (200, 429)
                        if kind == "filtered" and ok:
                            ok = '"card"' not in r.text
                        got = r.status_code
                    except httpx.HTTPError as e:
                        ok, got = False, type(e).__name__
                    with lock:
                        outcomes[(kind, got)] += 1
                        if not ok:
                            unexpected.append(f"{kind} {method} {path}: {got}")
            finally:
                for c in clients.values():
                    c.close()

        finished = threading.Event()

        def sample() -> None:
            while not finished.wait(1):
                rss.append((sum(outcomes.values()), rss_kb(proxy.proc.pid)))

        start = time.monotonic()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        finished.set()
        sampler.join()
        rss.append((requests, rss_kb(proxy.proc.pid)))
        proxy.stop()  # clean shutdown: the audit trail is flushed
        audited = _count_audit(home)
    tenth = [kb for done, kb in rss if done >= requests // 10]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
        "rps": round(requests / elapsed, 1),
        "unexpected": len(unexpected),
        "unexpected_sample": unexpected[:5],
        "outcomes": {f"{k} {s}": n for (k, s), n in sorted(outcomes.items(), key=str)},
        "rss_mb_after_10pct": round(tenth[0] / 1024, 1) if tenth else None,
        "rss_mb_end": round(rss[-1][1] / 1024, 1),
        "rss_mb_max": round(max(kb for _, kb in rss) / 1024, 1),
        "audit_records": audited,
    }


def _count_audit(home: Path) -> int:
    from sqlalchemy import text

    from rr_addon.store.db import make_engine
    from rr_addon.testing.home import database_url

    engine = make_engine(database_url(home) or f"sqlite:///{home / 'rr.db'}")
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM rr_audit")).scalar_one()
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rr-soak-") as tmp:
        result = run_soak(args.requests, args.concurrency, Path(tmp))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"soak: {result['requests']} requests, {result['concurrency']} clients, {result['seconds']} s ({result['rps']} req/s)")
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in result["outcomes"].items():
        table.add_row(k, str(v))
    for k in ("unexpected", "rss_mb_after_10pct", "rss_mb_end", "rss_mb_max", "audit_records"):
        table.add_row(k, str(result[k]))
    Console(stderr=True).print(table)
    print(json.dumps({k: v for k, v in result.items() if k != "outcomes"}))


if __name__ == "__main__":
    main()
