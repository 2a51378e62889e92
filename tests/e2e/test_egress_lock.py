"""The shipped egress locks (deploy/egress-lock/) make rr the only way out.

HTTPS_PROXY is cooperative: a workload can ignore it. Each test applies a
shipped recipe unchanged — the nftables owner match, or the network-namespace
runner — to a workload uid and proves with curl that the workload reaches a
local TLS upstream through a real `rr run` (secret injected) and is refused
when it connects to the same upstream directly (which works before the lock).

Isolation: the test moves its own thread into a network namespace it creates
(only loopback), so the rules, rr, the upstream and the workload live there and
the host's ruleset is never touched; concurrent runs cannot collide. The
workload is an unused uid (no account is created). Everything goes when the
test ends, failing or not. Needs root, nft, ip, setpriv and curl: missing ones
skip here and fail under RR_REQUIRE_SERVICES=1 (CI); the netns runner also needs socat."""

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
NETNS_RUN = ROOT / "deploy" / "egress-lock" / "netns-run"
TOOLS = {"nft": "nftables", "ip": "iproute2", "setpriv": "util-linux", "curl": "curl"}
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


class World:
    """rr and a TLS upstream on loopback in a namespace of the test's own, and curl as an unprivileged workload."""

    def __init__(self, upstream: Upstream, proxy: ProxyProcess, shared: Path, uid: int, tools: dict[str, str]):
        self.upstream, self.proxy, self.shared, self.uid, self.tools = upstream, proxy, shared, uid, tools

    def curl(self, *args: str, marker: str, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
        """curl as the workload uid (directly, or inside `wrap`), with HTTPS_PROXY pointing at rr as a workload's would."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HTTPS_PROXY": self.proxy.url("agent", "KEY_main")}
        as_workload = [self.tools["setpriv"], f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups"]
        cmd = [*(wrap or as_workload), self.tools["curl"], "-sS", "-m", "20", *args]
        cmd += ["-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{self.upstream.port}/anything/{marker}"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    def through_rr(self, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
        return self.curl("--cacert", str(self.shared / "rr-ca.pem"), marker=uuid.uuid4().hex, wrap=wrap)

    def direct(self, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
        return self.curl("--noproxy", "*", "--cacert", str(self.shared / "upstream-ca.pem"), marker=uuid.uuid4().hex, wrap=wrap)

    def arrived(self, done: subprocess.CompletedProcess) -> list[str | None]:
        """The Authorization header of each request the upstream received for this curl call."""
        marker = done.args[-1].rsplit("/", 1)[1]
        return [r.header("authorization") for r in self.upstream.received if r.path.endswith(marker)]

    def assert_bypass_works(self) -> None:
        """Without a lock the workload reaches the upstream around rr: what the recipes must stop."""
        before = self.direct()
        assert (before.returncode, before.stdout) == (0, "200"), before.stderr
        assert self.arrived(before) == [None]

    def assert_locked(self, wrap: list[str] | None = None) -> None:
        ok = self.through_rr(wrap)
        assert (ok.returncode, ok.stdout) == (0, "200"), ok.stderr + self.proxy.log_text()[-2000:]
        assert self.arrived(ok) == [f"Bearer {SECRET}"]
        refused = self.direct(wrap)
        assert refused.returncode == 7, (refused.returncode, refused.stdout, refused.stderr)  # 7: could not connect
        assert "Couldn't connect" in refused.stderr or "Connection refused" in refused.stderr, refused.stderr
        assert self.arrived(refused) == []


@pytest.fixture
def world(tmp_path, pki):
    tools = {name: tool(name, package) for name, package in TOOLS.items()}
    if os.geteuid() != 0:
        unavailable("the egress-lock tests must run as root (they set rules in a network namespace of their own)")
    # the workload is not root: it reads the CA files from a directory it can reach
    shared = Path(tempfile.mkdtemp(prefix="rr-egress-"))
    try:
        shared.chmod(0o755)
        with private_network(tools["ip"]), Upstream(pki) as upstream:
            home = tmp_path / "home"
            sqlite = {"RR_DATABASE_URL": f"sqlite:///{home / 'rr.db'}"}  # PostgreSQL is outside this namespace
            prepare_home(home, POLICY.format(port=upstream.port, secret=SECRET), env=sqlite)
            with ProxyProcess(home, upstream_ca=pki.ca_cert, env=sqlite) as proxy:
                for name, src in (("rr-ca.pem", proxy.ca), ("upstream-ca.pem", pki.ca_cert)):
                    shutil.copyfile(src, shared / name)
                    (shared / name).chmod(0o644)
                yield World(upstream, proxy, shared, unused_uid(), tools)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_the_shipped_nftables_lock_leaves_rr_as_the_only_way_out(world):
    world.assert_bypass_works()
    nft = world.tools["nft"]
    defines = ["-D", f"WORKLOAD={world.uid}", "-D", "RR_ADDR=127.0.0.1", "-D", f"RR_PORT={world.proxy.port}"]
    applied = subprocess.run([nft, *defines, "-f", str(NFT_CONF)], capture_output=True, text=True)
    if applied.returncode != 0 and "Operation not permitted" in applied.stderr:
        unavailable(f"nft cannot set rules here: {applied.stderr.strip()}")
    assert applied.returncode == 0, applied.stderr
    try:
        world.assert_locked()
    finally:
        subprocess.run([nft, "delete", "table", "inet", "rr_egress_lock"], capture_output=True)


def test_the_shipped_netns_runner_leaves_rr_as_the_only_way_out(world):
    world.assert_bypass_works()
    if shutil.which("socat") is None:
        unavailable("socat is not installed (Debian: apt-get install -y socat)")
    world.assert_locked(wrap=[str(NETNS_RUN), f"127.0.0.1:{world.proxy.port}", f"{world.uid}:{world.uid}"])
