"""The shipped egress lock (deploy/egress-lock/nftables.conf) makes rr the only way out.

HTTPS_PROXY is cooperative: a workload can ignore it. This applies the shipped
nftables file, unchanged, for a workload uid and proves with curl that the
workload reaches a local TLS upstream through a real `rr run` (secret injected)
and is refused when it connects to the same upstream directly.

Isolation: the test moves its own thread into a network namespace it creates
(only loopback), so the rules, rr, the upstream and the workload live there and
the host's ruleset is never touched; concurrent runs cannot collide. The
workload is an unused uid (no account is created). Everything goes when the
test ends, failing or not. Needs root, nft, ip, setpriv and curl: missing ones
skip here and fail under RR_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.upstream import Upstream

ROOT = Path(__file__).resolve().parents[2]
NFT_CONF = ROOT / "deploy" / "egress-lock" / "nftables.conf"
SECRET = "sk_egress_SECRET"
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: agent
    targets: [{{target: api, credential: live}}]
    credentials: [{{name: main, auth: api_key, secret: KEY_main}}]
"""


def unavailable(message: str) -> None:
    if os.environ.get("RR_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (RR_REQUIRE_SERVICES=1: the egress-lock recipe must be tested)")
    pytest.skip(message)


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)
    if path is None:
        unavailable(f"{name} is not installed (Debian: apt-get install -y {package})")
    return path


def unused_uid() -> int:
    for uid in range(61000, 65000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("no unused uid between 61000 and 65000")


@contextmanager
def private_network(ip: str):
    """This thread, and every process it starts, in a new network namespace with only loopback."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            os.unshare(os.CLONE_NEWNET)
        except PermissionError as e:
            unavailable(f"cannot create a network namespace ({e}); the test must run as root")
        try:
            subprocess.run([ip, "link", "set", "lo", "up"], check=True, capture_output=True)
            yield
        finally:
            os.setns(original, os.CLONE_NEWNET)
    finally:
        os.close(original)


def test_the_shipped_nftables_lock_leaves_rr_as_the_only_way_out(tmp_path, pki):
    nft, ip = tool("nft", "nftables"), tool("ip", "iproute2")
    setpriv, curl = tool("setpriv", "util-linux"), tool("curl", "curl")
    if os.geteuid() != 0:
        unavailable("the egress-lock test must run as root (it sets nftables rules in a namespace of its own)")
    uid = unused_uid()
    # the workload is not root: it needs to read the CA files from a directory it can reach
    shared = Path(tempfile.mkdtemp(prefix="rr-egress-"))
    try:
        shared.chmod(0o755)
        with private_network(ip), Upstream(pki) as upstream:
            home = tmp_path / "home"
            sqlite = {"RR_DATABASE_URL": f"sqlite:///{home / 'rr.db'}"}  # PostgreSQL is outside this namespace
            prepare_home(home, POLICY.format(port=upstream.port, secret=SECRET), env=sqlite)
            with ProxyProcess(home, upstream_ca=pki.ca_cert, env=sqlite) as proxy:
                for name, src in (("rr-ca.pem", proxy.ca), ("upstream-ca.pem", pki.ca_cert)):
                    shutil.copyfile(src, shared / name)
                    (shared / name).chmod(0o644)
                url = f"https://127.0.0.1:{upstream.port}/anything"

                def workload(*args: str, marker: str) -> subprocess.CompletedProcess:
                    """curl as the workload uid, with HTTPS_PROXY pointing at rr as a workload's would."""
                    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HTTPS_PROXY": proxy.url("agent", "KEY_main")}
                    cmd = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", curl, "-sS", "-m", "20", *args]
                    cmd += ["-o", "/dev/null", "-w", "%{http_code}", f"{url}/{marker}"]
                    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

                def arrived(marker: str) -> list:
                    return [r for r in upstream.received if r.path.endswith(marker)]

                # Without the lock the workload can bypass rr: this is what the recipe must stop.
                bypass = uuid.uuid4().hex
                before = workload("--noproxy", "*", "--cacert", str(shared / "upstream-ca.pem"), marker=bypass)
                assert (before.returncode, before.stdout) == (0, "200"), before.stderr
                assert arrived(bypass) and arrived(bypass)[0].header("authorization") is None

                defines = ["-D", f"WORKLOAD={uid}", "-D", "RR_ADDR=127.0.0.1", "-D", f"RR_PORT={proxy.port}"]
                applied = subprocess.run([nft, *defines, "-f", str(NFT_CONF)], capture_output=True, text=True)
                if applied.returncode != 0 and "Operation not permitted" in applied.stderr:
                    unavailable(f"nft cannot set rules here: {applied.stderr.strip()}")
                assert applied.returncode == 0, applied.stderr
                try:
                    through = uuid.uuid4().hex
                    ok = workload("--cacert", str(shared / "rr-ca.pem"), marker=through)
                    assert (ok.returncode, ok.stdout) == (0, "200"), ok.stderr + proxy.log_text()[-2000:]
                    assert [r.header("authorization") for r in arrived(through)] == [f"Bearer {SECRET}"]

                    direct = uuid.uuid4().hex
                    refused = workload("--noproxy", "*", "--cacert", str(shared / "upstream-ca.pem"), marker=direct)
                    assert refused.returncode == 7, (refused.returncode, refused.stdout, refused.stderr)  # 7: could not connect
                    assert "Couldn't connect" in refused.stderr or "Connection refused" in refused.stderr, refused.stderr
                    assert arrived(direct) == []
                finally:
                    subprocess.run([nft, "delete", "table", "inet", "rr_egress_lock"], capture_output=True)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
