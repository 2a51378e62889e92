"""A control plane and two data planes as separate processes, each with its own
home; the data planes have no database (RR_DATABASE_URL empty, no rr.db, no
master key). A real TLS upstream receives what they send."""

from __future__ import annotations

import json
import re
import ssl
import uuid
from pathlib import Path

import httpx
import pytest

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rr_addon.hybrid import bundle as bundles
from rr_addon.hybrid import sealing
from rr_addon.store import audit_store
from rr_addon.store.db import make_engine
from rr_addon.testing.home import database_url, prepare_home, rr_cli
from rr_addon.testing.hybrid import ControlPlaneProcess, dataplane, state
from rr_addon.testing.proxy import free_port
from rr_addon.testing.wait import eventually

pytestmark = pytest.mark.e2e

SECRET_1 = "sk_hybrid_FIRST_6f1d2c"
SECRET_2 = "sk_hybrid_SECOND_93ab77"
CALLER_KEY = "caller-key-hybrid-5e0c"

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials:
      - {{name: a, auth: api_key, secret: {caller}}}
"""


def policy(port: int, secret: str) -> str:
    return POLICY.format(port=port, secret=secret, caller=CALLER_KEY)


def apply(home: Path, text: str) -> None:
    (home / "policy.yaml").write_text(text)
    rr_cli(home, "apply", "-f", str(home / "policy.yaml"), "--prune")


def issue(cp_home: Path, name: str, url: str, where: Path) -> Path:
    path = where / f"{name}.rr-bundle.json"
    rr_cli(cp_home, "control-plane", "issue-dataplane", name, "--url", url, "-o", str(path))
    return path


def get(proxy, upstream, path: str = "/anything", key: str = CALLER_KEY) -> httpx.Response:
    with httpx.Client(proxy=proxy.url("agent", key), verify=ssl.create_default_context(cafile=proxy.ca), timeout=15) as c:
        return c.get(f"https://127.0.0.1:{upstream.port}{path}")


def injected(upstream, path: str) -> str | None:
    seen = [r for r in upstream.received if r.path == path]
    return seen[-1].header("authorization") if seen else None


@pytest.fixture
def cp(tmp_path, upstream):
    home = prepare_home(tmp_path / "cp", policy(upstream.port, SECRET_1))
    with ControlPlaneProcess(home) as process:
        yield process


def test_configuration_reaches_both_data_planes_and_changes_reach_them(cp, tmp_path, pki, upstream):
    b1, b2 = issue(cp.home, "dp1", cp.url, tmp_path), issue(cp.home, "dp2", cp.url, tmp_path)
    with dataplane(tmp_path / "dp1", b1, upstream_ca=pki.ca_cert, name="dp1") as dp1, dataplane(tmp_path / "dp2", b2, upstream_ca=pki.ca_cert, name="dp2") as dp2:
        for n, dp in enumerate((dp1, dp2)):
            r = get(dp, upstream, f"/first/{n}")
            assert r.status_code == 200, r.text
            assert injected(upstream, f"/first/{n}") == f"Bearer {SECRET_1}"
            assert get(dp, upstream, f"/nokey/{n}", key="wrong").status_code == 401

        apply(cp.home, policy(upstream.port, SECRET_2))
        version = json.loads(rr_cli(cp.home, "status", "--json").output)["config_version"]
        for n, dp in enumerate((dp1, dp2)):
            eventually(lambda: state(dp.home).get("config_version") == version, what=f"dp{n + 1} on version {version}")
            r = get(dp, upstream, f"/second/{n}")
            assert r.status_code == 200, r.text
            assert injected(upstream, f"/second/{n}") == f"Bearer {SECRET_2}"

        # the control plane lists both, with the version each enforces
        def current() -> list[dict]:
            planes = [p for p in json.loads(rr_cli(cp.home, "status", "--json").output)["dataplanes"] if p["config_version"] == version]
            return planes if len(planes) == 2 else []

        planes = eventually(current, what="both heartbeats on the new version")
        assert sorted(p["id"].split("/")[0] for p in planes) == ["dp1", "dp2"]
        assert all(not p["stats"]["hybrid"]["stale"] for p in planes)

        # the audit trail and usage on the control plane cover both data planes
        def audited() -> set[str]:
            lines = rr_cli(cp.home, "audit", "--json", "-n", "100").output.splitlines()
            return {json.loads(line)["dataplane"].split("/")[0] for line in lines if json.loads(line)["path"].startswith("/second/")}

        eventually(lambda: audited() == {"dp1", "dp2"}, what="audit records of both data planes")

        def usage() -> dict:
            rows = [json.loads(line) for line in rr_cli(cp.home, "usage", "--json").output.splitlines()]
            row = next((r for r in rows if r["meter"] is None and r["subject"] == "a" and r["window"] == "day"), None)
            return row if row and sorted(row["by_scope"]) == ["dataplane:dp1", "dataplane:dp2"] and row["used"] >= 4 else None

        row = eventually(usage, what="usage reported by both data planes")
        assert row["used"] == sum(row["by_scope"].values())


def test_control_plane_outage_traffic_continues_audit_arrives_once(cp, tmp_path, pki, upstream):
    bundle = issue(cp.home, "edge", cp.url, tmp_path)
    home = tmp_path / "edge"
    metrics_port = free_port()
    dp = dataplane(home, bundle, upstream_ca=pki.ca_cert, args=["--set", f"rr_metrics_port={metrics_port}"], name="edge").start()
    try:
        assert get(dp, upstream, "/before").status_code == 200
        ids = {r.headers["rr-request-id"] for r in [get(dp, upstream, "/before")]}

        cp.stop()
        sent = []
        for i in range(5):
            r = get(dp, upstream, f"/during/{i}")
            assert r.status_code == 200, r.text  # serving goes on while the control plane is down
            assert injected(upstream, f"/during/{i}") == f"Bearer {SECRET_1}"
            sent.append(r.headers["rr-request-id"])
        denied = get(dp, upstream, "/during/denied", key="wrong")
        assert denied.status_code == 401
        sent.append(denied.headers["rr-request-id"])
        st = eventually(lambda: (s := state(home)).get("stale") and s, what="stale state")
        assert st["connected"] is False and st["stale_since"]
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert re.search(r"^rr_control_plane_connected 0\.0$", text, re.M)
        assert float(re.search(r"^rr_config_stale_since_seconds (\S+)$", text, re.M).group(1)) > 0

        # a restart while the control plane is still down serves the cached configuration
        dp.stop()
        dp = dataplane(home, bundle, upstream_ca=pki.ca_cert, name="edge").start()
        r = get(dp, upstream, "/after-restart")
        assert r.status_code == 200 and injected(upstream, "/after-restart") == f"Bearer {SECRET_1}"
        sent.append(r.headers["rr-request-id"])
        status = rr_cli(home, "status", "--json", env={"RR_DATABASE_URL": ""})
        st = json.loads(status.output)
        assert st["config_source"] == "cache" and st["stale"] is True and st["stale_since"]
        human = rr_cli(home, "status", env={"RR_DATABASE_URL": ""}).output
        assert "stale since" in human

        cp.start()
        engine = make_engine(database_url(cp.home) or f"sqlite:///{cp.home / 'rr.db'}")
        try:
            wanted = set(sent) | ids
            eventually(lambda: wanted <= {r["request_id"] for r in audit_store.records(engine, wanted)}, timeout=30, what="every audit record at the control plane")
            eventually(lambda: state(home).get("undelivered_audit") == 0 and state(home).get("connected"), what="spool drained")
            rows = audit_store.records(engine, wanted)
            assert sorted(r["request_id"] for r in rows) == sorted(wanted)  # each exactly once
            assert all(r["dataplane"].startswith("edge/") for r in rows)
            assert {r["path"] for r in rows} >= {f"/during/{i}" for i in range(5)} | {"/after-restart"}
        finally:
            engine.dispose()
        eventually(lambda: not state(home).get("stale"), what="fresh again")
    finally:
        dp.stop()


def test_revoked_data_plane_is_cut_off(cp, tmp_path, pki, upstream):
    b1, b2 = issue(cp.home, "keep", cp.url, tmp_path), issue(cp.home, "gone", cp.url, tmp_path)
    with dataplane(tmp_path / "keep", b1, upstream_ca=pki.ca_cert, name="keep") as keep, dataplane(tmp_path / "gone", b2, upstream_ca=pki.ca_cert, name="gone") as gone:
        v0 = state(gone.home)["config_version"]
        rr_cli(cp.home, "control-plane", "revoke-dataplane", "gone")
        eventually(lambda: state(gone.home).get("revoked"), what="gone learns it is revoked")
        apply(cp.home, policy(upstream.port, SECRET_2))
        version = json.loads(rr_cli(cp.home, "status", "--json").output)["config_version"]
        eventually(lambda: state(keep.home).get("config_version") == version, what="keep on the new version")
        assert get(keep, upstream, "/keep").status_code == 200 and injected(upstream, "/keep") == f"Bearer {SECRET_2}"
        st = state(gone.home)
        assert st["config_version"] == v0 != version and st["revoked"] and st["stale"]
        assert get(gone, upstream, "/gone").status_code == 200 and injected(upstream, "/gone") == f"Bearer {SECRET_1}"
        # and a restart of the revoked data plane gets nothing from the control plane
        gone.stop()
        (gone.home / "dataplane" / "config.sealed.json").unlink()
        again = dataplane(gone.home, b2, upstream_ca=pki.ca_cert, name="gone-again")
        assert again.run_to_exit() != 0
        assert "data plane gone has been revoked" in again.log_text()
        assert "no cached configuration" in again.log_text()


def test_data_plane_home_holds_no_clear_secret(cp, tmp_path, pki, upstream):
    bundle = issue(cp.home, "vault", cp.url, tmp_path)
    home = tmp_path / "vault"
    with dataplane(home, bundle, upstream_ca=pki.ca_cert, name="vault") as dp:
        for i in range(3):
            assert get(dp, upstream, f"/s/{i}").status_code == 200
        assert injected(upstream, "/s/0") == f"Bearer {SECRET_1}"
        eventually(lambda: state(home).get("undelivered_audit") == 0 and state(home).get("last_contact"), what="audit delivered")
        files = [p for p in home.rglob("*") if p.is_file()]
        assert any(p.name == "config.sealed.json" for p in files) and any(p.name == "spool.db" for p in files)
        assert not (home / "rr.db").exists() and not (home / "rr.key").exists()
        for p in files:
            data = p.read_bytes()
            for secret in (SECRET_1, CALLER_KEY):
                assert secret.encode() not in data, f"{secret} in clear in {p}"


def test_a_forged_or_altered_cache_is_refused(cp, tmp_path, pki, upstream):
    bundle = issue(cp.home, "cached", cp.url, tmp_path)
    home = tmp_path / "cached"
    with dataplane(home, bundle, upstream_ca=pki.ca_cert, name="cached") as dp:
        assert get(dp, upstream, "/c").status_code == 200
    cp.stop()
    cache = home / "dataplane" / "config.sealed.json"
    envelope = json.loads(cache.read_text())
    ciphertext = bytearray(sealing.unb64(envelope["ciphertext"]))
    ciphertext[-1] ^= 1
    cache.write_text(json.dumps({**envelope, "ciphertext": sealing.b64(bytes(ciphertext))}))
    altered = dataplane(home, bundle, upstream_ca=pki.ca_cert, name="altered")
    assert altered.run_to_exit() != 0
    assert "is not usable" in altered.log_text() and "signature does not verify" in altered.log_text()
    # an envelope sealed to this data plane's key by someone without the control plane's signing key
    b = bundles.read(bundle)
    forged = sealing.seal(b'{"format": 1}', name="cached", version=999, recipient=b.private.public_key(), signer=Ed25519PrivateKey.generate())
    cache.write_text(json.dumps(forged))
    again = dataplane(home, bundle, upstream_ca=pki.ca_cert, name="forged")
    assert again.run_to_exit() != 0
    assert "signature does not verify" in again.log_text()


@pytest.mark.services
def test_data_planes_sharing_redis_report_one_scope_not_a_sum(tmp_path, pki, upstream, redis_url):
    """Meter consistency: two data planes of one region share Redis and count
    together; the control plane shows their count once, not twice."""
    proxy = f"region{uuid.uuid4().hex[:8]}"  # keys of its own in the shared Redis database
    home = prepare_home(tmp_path / "cp", policy(upstream.port, SECRET_1).replace("name: agent", f"name: {proxy}"))
    with ControlPlaneProcess(home) as cp:
        b1, b2 = issue(home, "r1", cp.url, tmp_path), issue(home, "r2", cp.url, tmp_path)
        env = {"RR_REDIS_URL": redis_url}
        d1 = dataplane(tmp_path / "r1", b1, upstream_ca=pki.ca_cert, name="r1")
        d2 = dataplane(tmp_path / "r2", b2, upstream_ca=pki.ca_cert, name="r2")
        d1.env.update(env)
        d2.env.update(env)
        with d1, d2:
            for i, dp in enumerate((d1, d1, d1, d2, d2)):
                with httpx.Client(proxy=dp.url(proxy, CALLER_KEY), verify=ssl.create_default_context(cafile=dp.ca), timeout=15) as c:
                    assert c.get(f"https://127.0.0.1:{upstream.port}/region/{i}").status_code == 200

            def usage() -> dict | None:
                rows = [json.loads(line) for line in rr_cli(home, "usage", "--json", "--proxy", proxy).output.splitlines()]
                row = next((r for r in rows if r["meter"] is None and r["subject"] == "a" and r["window"] == "day"), None)
                return row if row and row["used"] == 5 and row["by_scope"] else None

            row = eventually(usage, what="the region's usage at the control plane")
            assert list(row["by_scope"]) == [next(iter(row["by_scope"]))] and next(iter(row["by_scope"])).startswith("redis:")
            assert row["used"] == 5  # counted once though both data planes reported it
