"""Secrets the data plane reads itself (issue 19, item 2): a `{file: PATH,
watch: true}` target secret mounted the way Kubernetes mounts it (the file is a
symlink through `..data`, swapped by an atomic rename) is re-read by a running
`rr run` and injected on the next request with no restart and no `rr apply`;
the replaced value is still masked in responses; a file that becomes unreadable
keeps the last good value, logs an error and counts in a metric; `rr secret
status` shows the source, the last rotation and readability, never a value."""

from __future__ import annotations

import json
import os
import re
import ssl
from pathlib import Path

import httpx
import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess, free_port
from rr_addon.testing.wait import eventually

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {{file: {path}, watch: true}}}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials: [{{name: a, auth: api_key, secret: KEY_rot}}]
"""
OLD, NEW, NEWER, LATEST = "sk_rot_OLD_7f3a", "sk_rot_NEW_91c2", "sk_rot_NEWER_c0de", "sk_rot_LATEST_5e1d"


class K8sSecretDir:
    """The layout kubelet writes: `token -> ..data/token`, `..data -> ..<stamp>`;
    an update writes a new stamped directory and renames a new `..data` over the old."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir()
        self.n = 0
        (root / "token").symlink_to("..data/token")

    def write(self, value: str) -> None:
        self.n += 1
        stamp = self.root / f"..2026_{self.n}"
        stamp.mkdir()
        (stamp / "token").write_text(value + "\n")
        self.point_to(stamp.name)

    def point_to(self, name: str) -> None:
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(name)
        os.rename(tmp, self.root / "..data")  # atomic, as kubelet does


def client(proxy) -> httpx.Client:
    return httpx.Client(proxy=proxy.url("agent", "KEY_rot"), verify=ssl.create_default_context(cafile=str(proxy.ca)), timeout=10)


def sent_bearer(proxy, upstream, tag: str) -> str | None:
    with client(proxy) as c:
        assert c.get(f"https://127.0.0.1:{upstream.port}/anything/{tag}").status_code == 200
    got = [r for r in upstream.received if r.path == f"/anything/{tag}"]
    return got[-1].header("authorization")


def wait_for_bearer(proxy, upstream, value: str, timeout: float = 30.0) -> None:
    tries = iter(range(1, 1 << 30))
    seen: list[str | None] = [None]

    def sends_it() -> bool:
        seen[0] = sent_bearer(proxy, upstream, f"rot-{value}-{next(tries)}")
        return seen[0] == f"Bearer {value}"

    eventually(sends_it, timeout, lambda: f"the rotated secret sent (still sending {seen[0]!r})", interval=0.1)


def secret_status(proxy) -> tuple[str, dict]:
    out = rr_cli(proxy.home, "secret", "status", "--json").output
    (entry,) = [e for e in json.loads(out)["secrets"] if e["credential"] == "live"]
    return out, entry


def wait_for_status(proxy, check, timeout: float = 30.0) -> dict:
    out, entry = eventually(lambda: (got := secret_status(proxy)) and check(got[1]) and got, timeout, lambda: f"the secret status wanted: {secret_status(proxy)[1]}")
    for value in (OLD, NEW, NEWER, LATEST):
        assert value not in out and value not in rr_cli(proxy.home, "secret", "status").output
    return entry


def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    lines = [line for line in text.splitlines() if line.startswith(name + "{") and 'target="api"' in line]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-rotate")
    secrets = K8sSecretDir(home / "mounted")
    secrets.write(OLD)
    prepare_home(home, POLICY.format(port=upstream.port, path=home / "mounted" / "token"))
    metrics_port = free_port()
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=["--set", f"rr_metrics_port={metrics_port}"]) as p:
        p.secrets, p.metrics_port = secrets, metrics_port
        yield p


def test_rotated_file_is_injected_without_restart_and_old_value_stays_masked(proxy, upstream):
    assert sent_bearer(proxy, upstream, "before") == f"Bearer {OLD}"
    proxy.secrets.write(NEW)
    wait_for_bearer(proxy, upstream, NEW)
    assert OLD not in proxy.log_text() and NEW not in proxy.log_text()
    # an upstream that echoes the replaced secret: masked during the grace period
    upstream.answer("/echo-old", lambda r: (200, "text/plain", f"old={OLD} new={NEW}".encode()))
    with client(proxy) as c:
        body = c.get(f"https://127.0.0.1:{upstream.port}/echo-old").text
    assert OLD not in body and NEW not in body
    assert re.fullmatch(r"old=\[rr:api/live\]\** new=\[rr:api/live\]\**", body), body  # padded to the secret's length


def test_unreadable_file_keeps_last_good_value_logs_and_counts(proxy, upstream):
    proxy.secrets.write(NEWER)
    wait_for_bearer(proxy, upstream, NEWER)
    errors_before = metric(proxy.metrics_port, "rr_secret_source_errors_total")
    proxy.secrets.point_to("..missing")  # `..data` now dangles: the file cannot be read
    proxy.wait_for_log("still using the last good value", timeout=30)
    assert "api/live" in proxy.log_text()
    assert sent_bearer(proxy, upstream, "while-broken") == f"Bearer {NEWER}"
    assert metric(proxy.metrics_port, "rr_secret_source_errors_total") > errors_before
    assert metric(proxy.metrics_port, "rr_secret_source_readable") == 0.0
    proxy.secrets.point_to(f"..2026_{proxy.secrets.n}")  # repaired
    proxy.wait_for_log("readable again", timeout=30)
    assert metric(proxy.metrics_port, "rr_secret_source_readable") == 1.0


def test_secret_status_shows_source_rotation_and_readability_never_the_value(proxy, upstream):
    path = proxy.home / "mounted" / "token"
    proxy.secrets.write(LATEST)  # each test rotates itself: they may run in different processes
    wait_for_bearer(proxy, upstream, LATEST)
    entry = wait_for_status(proxy, lambda e: e["readable"] is True and e["rotated_at"] is not None)
    assert entry["source"] == f"watched-file:{path}" and entry["dataplane"] and entry["kind"] == "bearer"
    proxy.secrets.point_to("..missing")
    entry = wait_for_status(proxy, lambda e: e["readable"] is False)
    assert "cannot read secret file" in entry["error"] and str(path) in entry["error"]
    proxy.secrets.point_to(f"..2026_{proxy.secrets.n}")
    wait_for_status(proxy, lambda e: e["readable"] is True)
