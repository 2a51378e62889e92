"""Secrets never shown (docs/security.md), at rest: after real traffic through `rr run`, no upstream secret and
no caller key is in the database file, the audit trail (`rr audit --json`, the
`rr_audit_file` JSON lines) or `rr export` — the values the flows, logs and dumps
tests (test_proxy.py, test_views.py) cannot see. docs/security.md cites this."""

from __future__ import annotations

import base64
import ssl

import httpx

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess

SECRETS = {"live": "sk_live_AT_REST_secret", "qry": "q_AT_REST_secret"}
KEYS = {"main": "KEY_AT_REST_main", "qry": "KEY_AT_REST_qry"}
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials:
      - {{name: live, kind: bearer, secret: {live}}}
      - {{name: qry, kind: api_key, query: api_key, secret: {qry}}}
proxies:
  - name: agent
    targets: [{{target: api, credential: live}}]
    credentials:
      - {{name: main, auth: api_key, secret: {main}}}
      - {{name: qry, auth: api_key, secret: {qry_key}, target_credentials: {{api: qry}}}}
"""


def test_no_secret_in_the_database_the_audit_trail_or_the_export(tmp_path, pki, upstream):
    home = tmp_path / "home"
    sqlite = {"RR_DATABASE_URL": f"sqlite:///{home / 'rr.db'}"}  # the file whose bytes are read below
    policy = POLICY.format(port=upstream.port, live=SECRETS["live"], qry=SECRETS["qry"], main=KEYS["main"], qry_key=KEYS["qry"])
    prepare_home(home, policy, env=sqlite)
    audit_file = home / "audit.jsonl"
    with ProxyProcess(home, upstream_ca=pki.ca_cert, env=sqlite, args=["--set", f"rr_audit_file={audit_file}"]) as proxy:
        trust = ssl.create_default_context(cafile=str(proxy.ca))
        for name, key in KEYS.items():
            with httpx.Client(proxy=proxy.url("agent", key), verify=trust) as c:
                assert c.get(f"https://127.0.0.1:{upstream.port}/anything/{name}?x=1").status_code == 200
                assert c.get(f"https://127.0.0.1:{upstream.port}/anything/{name}", headers={"Authorization": f"Bearer {key}"}).status_code == 200
            with httpx.Client(proxy=proxy.url("agent", "KEY_wrong"), verify=trust) as c:
                assert c.get(f"https://127.0.0.1:{upstream.port}/anything/wrong").status_code == 401
    # the upstream did get them: the values searched for below are the ones that travelled
    seen = [r.header("authorization") or r.path for r in upstream.received]
    assert any(SECRETS["live"] in s for s in seen) and any(SECRETS["qry"] in s for s in seen)

    audit_json = rr_cli(home, "audit", "--json", env=sqlite).output
    assert audit_json.count('"request_id"') >= 5  # every request is there (a clean shutdown flushed them)
    stored = {
        "database": b"".join(p.read_bytes() for p in home.glob("rr.db*")),
        "audit --json": audit_json.encode(),
        "rr_audit_file": audit_file.read_bytes(),
        "export": rr_cli(home, "export", env=sqlite).output.encode(),
    }
    needles = [*SECRETS.values(), *KEYS.values(), "KEY_wrong"]
    needles += [base64.b64encode(f"rr:{k}".encode()).decode() for k in KEYS.values()]
    for where, data in stored.items():
        assert data, where
        for needle in needles:
            assert needle.encode() not in data, f"{needle} in {where}"
