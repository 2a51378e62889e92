"""The control plane's HTTPS API in-process: who may call what, what it seals
for whom, and that resent audit records are stored once."""

from __future__ import annotations

import json
import re
import os
import ssl
import threading
from pathlib import Path

import httpx
import pytest

from rr_addon import settings
from rr_addon.crypto import Keyring, master_keys
from rr_addon.hybrid import bundle as bundles
from rr_addon.hybrid import payload, registry, sealing, server
from rr_addon.hybrid.admin_api import install
from rr_addon.audit.records import new_record
from rr_addon.store import audit_store, config_store, dataplanes
from rr_addon.store.db import make_engine
from rr_addon.testing.certs import make_pki
from rr_addon.testing.home import prepare_home, rr_cli

SECRET = "sk_api_UPSTREAM_41c9"
POLICY = f"""
targets:
  - name: api
    hosts: [api.example.com]
    credentials: [{{name: live, kind: bearer, secret: {SECRET}}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials: [{{name: a, auth: api_key, secret: caller-key-api}}]
"""


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    home = prepare_home(tmp_path_factory.mktemp("cp"), POLICY)
    old = os.environ.get("RR_HOME")
    os.environ["RR_HOME"] = str(home)
    engine = make_engine(f"sqlite:///{home / 'rr.db'}")
    keyring = Keyring(master_keys(settings.home()))
    plane = server.ControlPlane(engine, keyring, interval=0.1)
    install(plane)
    srv = server.Server(("127.0.0.1", 0), plane, server.server_context(plane.keys, ["127.0.0.1"]))
    plane.start()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{srv.server_address[1]}"
    yield home, url, engine, keyring
    srv.shutdown()
    plane.stop()
    srv.server_close()
    engine.dispose()
    if old is None:
        os.environ.pop("RR_HOME", None)
    else:
        os.environ["RR_HOME"] = old


def issue(home: Path, name: str, url: str, *extra: str) -> bundles.Bundle:
    path = home / f"{name}.json"
    rr_cli(home, "control-plane", "issue-dataplane", name, "--url", url, "-o", str(path), *extra)
    return bundles.read(path)


def as_dataplane(b: bundles.Bundle, url: str) -> httpx.Client:
    return httpx.Client(base_url=url, verify=b.ssl_context(), timeout=10, trust_env=False)


def anonymous(home: Path, url: str) -> httpx.Client:
    ca = json.loads(next(home.glob("*.json")).read_text())["ca"] if list(home.glob("*.json")) else None
    return httpx.Client(base_url=url, verify=ssl.create_default_context(cadata=ca), timeout=10, trust_env=False)


def test_configuration_is_sealed_for_its_data_plane_only(cp):
    home, url, engine, keyring = cp
    one, two = issue(home, "one", url), issue(home, "two", url)
    with as_dataplane(one, url) as c:
        r = c.get("/v1/config", params={"after": -1, "wait": 0})
    assert r.status_code == 200
    envelope = r.json()["envelope"]
    assert SECRET not in r.text  # never in clear on the wire (inside TLS, too)
    version, doc = sealing.open_sealed(envelope, name="one", private=one.private, verifier=one.verifier)
    stored = payload.stored_from(doc, payload.session_keyring())
    assert version == stored.version == config_store.current_version(engine)
    with pytest.raises(sealing.SealError, match="sealed for data plane 'one', not 'two'"):
        sealing.open_sealed(envelope, name="two", private=two.private, verifier=two.verifier)
    # relabelled for two: the signature no longer holds
    with pytest.raises(sealing.SealError, match="signature"):
        sealing.open_sealed({**envelope, "dataplane": "two"}, name="two", private=two.private, verifier=two.verifier)
    # a forged envelope (sealed to one's public key by someone without the control plane's key)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    forged = sealing.seal(doc.replace(SECRET.encode(), b"attacker"), name="one", version=version, recipient=one.private.public_key(), signer=Ed25519PrivateKey.generate())
    with pytest.raises(sealing.SealError, match="signature"):
        sealing.open_sealed(forged, name="one", private=one.private, verifier=one.verifier)
    flipped = dict(envelope, ciphertext=sealing.b64(bytes([sealing.unb64(envelope["ciphertext"])[0] ^ 1]) + sealing.unb64(envelope["ciphertext"])[1:]))
    with pytest.raises(sealing.SealError):
        sealing.open_sealed(flipped, name="one", private=one.private, verifier=one.verifier)


def test_only_issued_unrevoked_certificates_reach_data_plane_endpoints(cp, tmp_path):
    home, url, engine, _ = cp
    first = issue(home, "rotated", url)
    second = issue(home, "rotated", url, "--force")  # re-issued: the first bundle is dead
    with anonymous(home, url) as c:
        r = c.get("/v1/config")
    assert r.status_code == 401 and "client certificate is required" in r.json()["error"]
    with as_dataplane(first, url) as c:
        r = c.get("/v1/config")
    assert r.status_code == 403 and "belongs to no issued data plane" in r.json()["error"]
    with as_dataplane(second, url) as c:
        assert c.get("/v1/config").status_code == 200
    # a certificate from another CA does not even complete the handshake
    other = make_pki(tmp_path / "other")
    ctx = ssl.create_default_context(cadata=second.ca.decode())
    ctx.load_cert_chain(other.server_cert, other.server_key)
    with httpx.Client(base_url=url, verify=ctx, timeout=10, trust_env=False) as c, pytest.raises(httpx.HTTPError):
        c.get("/v1/config")
    rr_cli(home, "control-plane", "revoke-dataplane", "rotated")
    with as_dataplane(second, url) as c:
        for path, method in (("/v1/config", "GET"), ("/v1/audit", "POST"), ("/v1/heartbeat", "POST")):
            r = c.request(method, path, json={"records": []})
            assert r.status_code == 403 and "rotated has been revoked" in r.json()["error"], path


def test_a_long_poll_ends_when_the_data_plane_is_revoked(cp):
    home, url, _, _ = cp
    b = issue(home, "waiting", url)
    with as_dataplane(b, url) as c:
        version = sealing.open_sealed(c.get("/v1/config").json()["envelope"], name="waiting", private=b.private, verifier=b.verifier)[0]
        result: list = []
        t = threading.Thread(target=lambda: result.append(c.get("/v1/config", params={"after": version, "wait": 30})))
        t.start()
        rr_cli(home, "control-plane", "revoke-dataplane", "waiting")
        t.join(20)
    assert result and result[0].status_code == 403


def test_audit_records_resent_are_stored_once_and_named_after_the_sender(cp):
    home, url, engine, _ = cp
    b = issue(home, "sender", url)
    records = [new_record(request_id=f"req-{i}", result="allow", status=200, dataplane="someone-else") for i in range(3)]
    with as_dataplane(b, url) as c:
        for _ in range(2):  # the answer to the first was "lost": the data plane sends the batch again
            r = c.post("/v1/audit", json={"records": records})
            assert r.status_code == 200
        r = c.post("/v1/heartbeat", json={"id": "other/pretend", "hostname": "h", "pid": 1, "config_version": 3, "stats": {}})
        assert r.status_code == 200
    rows = audit_store.records(engine, [f"req-{i}" for i in range(3)])
    assert len(rows) == 3
    assert {r["dataplane"] for r in rows} == {"sender/someone-else"}
    assert "sender/other-pretend" in {p.id for p in dataplanes.list_planes(engine)}


def test_audit_records_cannot_claim_another_data_plane(cp):
    """The attribution comes from the certificate; what a record says is the sender's word,
    and a claimed instance cannot make the stored name read as another data plane's."""
    home, url, engine, _ = cp
    issue(home, "victim", url)
    b = issue(home, "liar", url)
    forged = [
        new_record(request_id="forged-1", result="allow", status=200, proxy="victim", credential="victim", dataplane="victim/host-1-abc"),
        new_record(request_id="forged-2", result="allow", status=200, dataplane="victim"),
    ]
    with as_dataplane(b, url) as c:
        assert c.post("/v1/audit", json={"records": forged}).status_code == 200
        assert c.post("/v1/heartbeat", json={"id": "victim/host-1-abc", "hostname": "h", "pid": 1, "config_version": 1, "stats": {}}).status_code == 200
    rows = {r["request_id"]: r for r in audit_store.records(engine, ["forged-1", "forged-2"])}
    assert rows["forged-1"]["dataplane"] == "liar/victim-host-1-abc"
    assert rows["forged-2"]["dataplane"] == "liar/victim"
    assert all(r["dataplane"].count("/") == 1 and r["dataplane"].split("/")[0] == "liar" for r in rows.values())
    assert (rows["forged-1"]["proxy"], rows["forged-1"]["credential"]) == ("victim", "victim")  # the record's content: its sender's word
    ids = {p.id for p in dataplanes.list_planes(engine)}
    assert "liar/victim-host-1-abc" in ids and not any(i.startswith("victim/") for i in ids)


def test_a_data_plane_cannot_overwrite_the_usage_of_another(cp):
    home, url, engine, _ = cp
    honest, hostile = issue(home, "honest-usage", url), issue(home, "hostile-usage", url)
    counters = {"rr:meter:agent:day": [7, 4102444800]}
    with as_dataplane(honest, url) as c:
        assert c.post("/v1/usage", json={"id": "h1", "scope": "dataplane:honest-usage", "counters": counters}).status_code == 200
    with as_dataplane(hostile, url) as c:
        r = c.post("/v1/usage", json={"id": "x", "scope": "dataplane:honest-usage", "counters": {"rr:meter:agent:day": [0, 4102444800]}})
        assert r.status_code == 403 and "not 'dataplane:honest-usage'" in r.json()["error"]
        assert c.post("/v1/usage", json={"id": "x", "scope": "redis:0123456789abcdef", "counters": counters}).status_code == 200
        assert c.post("/v1/usage", json={"id": "x", "counters": counters}).status_code == 200  # its own scope by default
    _, by_scope = registry.reported_counts(engine, 0)
    assert by_scope["dataplane:honest-usage"] == {"rr:meter:agent:day": 7}


def test_admin_endpoints_need_an_admin_token(cp):
    home, url, _, _ = cp
    b = issue(home, "not-an-admin", url)
    with as_dataplane(b, url) as c:
        r = c.get("/v1/admin/status")
    assert r.status_code == 401
    with as_dataplane(b, url) as c:
        r = c.get("/v1/admin/status", headers={"Authorization": "Bearer rra_guessed"})
    assert r.status_code == 403
    path = home / "ops.json"
    rr_cli(home, "control-plane", "issue-admin", "ops", "--url", url, "-o", str(path))
    token = json.loads(path.read_text())["token"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with as_dataplane(b, url) as c:
        r = c.get("/v1/admin/status", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and "dataplanes" in r.json()
    rr_cli(home, "control-plane", "revoke-admin", "ops")
    with as_dataplane(b, url) as c:
        assert c.get("/v1/admin/status", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_bundle_refused_when_others_can_read_it(cp):
    home, url, _, _ = cp
    issue(home, "loose", url)
    path = home / "loose.json"
    os.chmod(path, 0o644)
    with pytest.raises(bundles.BundleError, match="readable by other users"):
        bundles.read(path)
    result = rr_cli(home, "run", "--dataplane-bundle", str(path), check=False)
    assert result.exit_code == 1 and "chmod 600" in result.output


# ---------------------------------------------------------------------------
# --server: operators without database access


@pytest.fixture
def operator(cp, tmp_path):
    """An operator's home: no database, no key; an admin credential."""
    home, url, _, _ = cp
    path = tmp_path / "alice.rr-admin.json"
    rr_cli(home, "control-plane", "issue-admin", "alice", "--url", url, "-o", str(path), "--force")
    work = tmp_path / "operator"
    work.mkdir()
    return work, url, path


def remote(work: Path, url: str, admin: Path, *args: str, env: dict | None = None, check: bool = True):
    return rr_cli(work, *args, "--server", url, "--admin", str(admin), env={"RR_DATABASE_URL": "", **(env or {})}, check=check)


def test_apply_export_status_audit_usage_through_the_control_plane(cp, operator):
    home, url, engine, keyring = cp
    work, url, admin = operator
    before = config_store.current_version(engine)
    (work / "policy.yaml").write_text(POLICY.replace(SECRET, "{env: UPSTREAM}").replace("api.example.com", "api2.example.com"))

    missing = remote(work, url, admin, "apply", "-f", str(work / "policy.yaml"), check=False)
    assert missing.exit_code == 1
    assert re.search(r"policy\.yaml:5: targets\[api\]\.credentials\[live\]\.secret: environment variable UPSTREAM is not set", missing.output), missing.output
    assert config_store.current_version(engine) == before

    out = remote(work, url, admin, "apply", "-f", str(work / "policy.yaml"), env={"UPSTREAM": "sk_from_operator_env_77"}).output
    assert "applied" in out and "hosts" in out
    stored = config_store.read(engine, keyring)
    assert stored.version == before + 1
    assert stored.target_secrets(keyring)[("api", "live")] == "sk_from_operator_env_77"
    assert stored.sources[("targets", "api", "live")] == "env:UPSTREAM"  # the label travels with the value

    # consent: a delete needs --prune, as in a script
    (work / "smaller.yaml").write_text("targets:\n  - name: other\n    hosts: [other.example.com]\n    credentials: [{name: c, kind: none}]\n")
    refused = remote(work, url, admin, "apply", "-f", str(work / "smaller.yaml"), check=False)
    assert refused.exit_code == 1 and "would delete" in refused.output and "--prune" in refused.output
    assert config_store.current_version(engine) == before + 1

    exported = remote(work, url, admin, "export").output
    assert "api2.example.com" in exported and "sk_from_operator_env_77" not in exported

    assert "data planes" in remote(work, url, admin, "status").output or "no data plane" in remote(work, url, admin, "status").output
    doc = json.loads(remote(work, url, admin, "status", "--json").output)
    assert doc["config_version"] == before + 1

    audit_store.insert_rows(engine, [audit_store.row_from_record(new_record(request_id="remote-audit-1", result="deny", status=403, code="access-denied", proxy="agent", dataplane="eu/x"))])
    lines = [json.loads(x) for x in remote(work, url, admin, "audit", "--json", "--code", "deny").output.splitlines()]
    assert "remote-audit-1" in {r["request_id"] for r in lines}
    rows = [json.loads(x) for x in remote(work, url, admin, "usage", "--json").output.splitlines()]
    assert any(r["proxy"] == "agent" and r["meter"] is None for r in rows)
    assert not (work / "rr.db").exists()


def test_server_commands_refuse_a_wrong_credential(cp, operator, tmp_path):
    home, url, _, _ = cp
    work, url, admin = operator
    bad = tmp_path / "bad.json"
    bad.write_text(admin.read_text().replace(json.loads(admin.read_text())["token"], "rra_not_the_token"))
    os.chmod(bad, 0o600)
    r = remote(work, url, bad, "status", check=False)
    assert r.exit_code == 1 and "403" in r.output and "unknown or revoked" in r.output
    r = rr_cli(work, "status", "--server", url, env={"RR_DATABASE_URL": "", "RR_ADMIN": ""}, check=False)
    assert r.exit_code == 1 and "--admin FILE or RR_ADMIN" in r.output


def test_connections_beyond_the_limit_are_closed_at_once(cp):
    import socket

    _, _, engine, keyring = cp
    plane = server.ControlPlane(engine, keyring, interval=0.1)
    srv = server.Server(("127.0.0.1", 0), plane, server.server_context(plane.keys, ["127.0.0.1"]), max_connections=1)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        held = socket.create_connection(srv.server_address)  # holds the one slot (no handshake yet)
        extra = socket.create_connection(srv.server_address)
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed without a word
        extra.close()
        held.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_hold_is_named_after_the_certificate_and_checked(cp):
    """POST /v1/approvals: the control plane names the hold after the data plane's
    certificate (not the body), and refuses malformed holds with 400, a request id
    already recorded with 409."""
    from rr_addon.store import approvals as approvals_store

    home, url, engine, _ = cp
    b = issue(home, "holder", url)
    hold = {"request_id": "hold-1", "dataplane": "someone-else/x", "proxy": "agent", "credential": "a", "target": "api", "target_credential": "live",
            "method": "POST", "url": "https://api.example.com/v1/refunds", "scope": "target", "rule": "r", "body_preview": "{}"}
    with as_dataplane(b, url) as c:
        assert c.post("/v1/approvals", json={"hold": hold, "timeout": 60, "instance": "host-1"}).status_code == 200
        assert approvals_store.one(engine, "hold-1")["dataplane"] == "holder/host-1"
        r = c.post("/v1/approvals", json={"hold": hold, "timeout": 60})
        assert r.status_code == 409 and "already recorded" in r.json()["error"]
        for bad, why in (
            ({"hold": {**hold, "request_id": "x y"}, "timeout": 60}, "request_id"),
            ({"hold": {**hold, "request_id": "hold-2"}, "timeout": 0}, "timeout"),
            ({"hold": {**hold, "request_id": "hold-2"}, "timeout": 3601}, "timeout"),
            ({"hold": {**hold, "request_id": "hold-2", "proxy": 7}, "timeout": 60}, "proxy"),
            ({"hold": "nope", "timeout": 60}, "hold"),
        ):
            r = c.post("/v1/approvals", json=bad)
            assert r.status_code == 400 and why in r.json()["error"], (bad, r.text)
        assert approvals_store.one(engine, "hold-2") is None
        r = c.post("/v1/approvals/close", json={"request_id": "hold-1", "state": "approved", "by": "alice"})
        assert r.status_code == 400 and "names no decider but 'mitmweb'" in r.json()["error"]
        r = c.post("/v1/approvals/close", json={"request_id": "hold-1", "state": "pending"})
        assert r.status_code == 400
        assert approvals_store.one(engine, "hold-1")["state"] == "pending"
        assert c.post("/v1/approvals/close", json={"request_id": "hold-1", "state": "withdrawn"}).json()["state"] == "withdrawn"
        assert c.post("/v1/approvals/decisions", json={"ids": ["hold-1"]}).json()["decided"]["hold-1"]["state"] == "withdrawn"
