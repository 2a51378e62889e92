"""Minted tokens through a real `rr run`: `rr token mint` (a real process, the
token alone on stdout) used as the caller key by httpx and curl; it works inside
its narrowing, is refused outside it, stops at expiry; the audit record names
the token beside its parent credential."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from rr_addon.testing.home import database_url, prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_tokens_SECRET}}]
  - name: other
    hosts: ["localhost:{port}"]
    allow_private_addresses: true
    credentials: [{{name: o, kind: bearer, secret: sk_other_SECRET}}]
proxies:
  - name: agent
    targets: [{{target: api}}, {{target: other}}]
    credentials:
      - name: parent
        auth: api_key
        secret: KEY_parent
        rules: [{{name: no-deletes, effect: deny, methods: [DELETE]}}]
"""

RR = Path(sys.executable).parent / "rr"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-tokens")
    prepare_home(home, POLICY.format(port=upstream.port))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        p.upstream_port = upstream.port
        yield p


def mint(proxy, *args: str, process: bool = False) -> subprocess.CompletedProcess:
    """`rr token mint --proxy agent --credential parent ARGS`: in this process (the same CLI
    code without an interpreter start, which takes seconds on a loaded machine), or as a
    real `rr` process with `process=True`."""
    if not process:
        done = rr_cli(proxy.home, "token", "mint", "--proxy", "agent", "--credential", "parent", *args, check=False)
        return subprocess.CompletedProcess(["rr", "token", "mint", *args], done.exit_code, done.stdout, done.stderr)
    env = {**os.environ, "RR_HOME": str(proxy.home), "RR_MASTER_KEY": ""}
    env.pop("RR_MASTER_KEY")
    if database_url(proxy.home):
        env["RR_DATABASE_URL"] = database_url(proxy.home)
    return subprocess.run([str(RR), "token", "mint", "--proxy", "agent", "--credential", "parent", *args], env=env, capture_output=True, text=True, timeout=60)


def minted(proxy, *args: str) -> str:
    done = mint(proxy, *args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rrt1."), done.stdout  # the token alone on stdout
    assert "minted tok_" in done.stderr
    return lines[0]


def call(proxy, token, method, path, host="127.0.0.1"):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", token), verify=verify, timeout=10) as c:
        return c.request(method, f"https://{host}:{proxy.upstream_port}{path}")


def test_a_narrowed_token_works_inside_and_only_inside(proxy, upstream):
    token = minted(proxy, "--ttl", "1h", "--target", "api", "--allow", "GET /v1/charges*", "--allow", "POST /v1/refunds")
    marker = uuid.uuid4().hex
    ok = call(proxy, token, "GET", f"/v1/charges/{marker}")
    assert ok.status_code == 200, ok.text
    seen = [r for r in upstream.received if r.path == f"/v1/charges/{marker}"]
    assert len(seen) == 1 and seen[0].header("authorization") == "Bearer sk_tokens_SECRET"
    assert token not in repr(seen[0].headers)  # the token is consumed like an rr key
    assert call(proxy, token, "POST", "/v1/refunds").status_code == 200
    refused = {
        "other target": call(proxy, token, "GET", "/v1/charges", host="localhost"),
        "other method": call(proxy, token, "DELETE", "/v1/charges/x"),
        "other path": call(proxy, token, "GET", "/v1/customers"),
    }
    for what, r in refused.items():
        assert r.status_code == 403, what
        assert r.json()["error"]["code"] == "access-denied", what
    assert "minted token's targets" in refused["other target"].json()["error"]["message"]
    assert "allow list" in refused["other path"].json()["error"]["message"]
    # the parent's own rules still apply to a token allowed every method
    wide = minted(proxy, "--ttl", "1h", "--allow", "* /*")
    r = call(proxy, wide, "DELETE", "/v1/charges/x")
    assert r.status_code == 403 and "no-deletes" in r.json()["error"]["message"]


def test_curl_with_a_token_in_the_proxy_url(proxy, upstream):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    token = minted(proxy, "--ttl", "10m", "--target", "api")
    out = subprocess.run(
        [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(proxy.ca), "--proxy", proxy.url("agent", token),
         f"https://127.0.0.1:{proxy.upstream_port}/curl"],
        capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]},
    )
    assert out.stdout == "200", out.stderr


def test_a_token_stops_at_expiry(proxy):
    token = minted(proxy, "--ttl", "4s")  # in-process: no CLI start between the mint and the first call
    assert call(proxy, token, "GET", "/before").status_code == 200
    r = eventually(lambda: (r := call(proxy, token, "GET", "/after")).status_code != 200 and r, what="the token refused after its ttl")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    assert "expired" in r.json()["error"]["message"]


def test_a_forged_token_is_refused(proxy):
    token = minted(proxy, "--ttl", "1h", "--target", "api")
    head, body, sig = token.split(".")
    forged = f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{sig}"
    r = call(proxy, forged, "GET", "/forged")
    assert r.status_code == 401 and "signature" in r.json()["error"]["message"]


def test_the_audit_record_names_the_token_and_its_parent(proxy):
    done = mint(proxy, "--ttl", "1h", process=True)  # the real command, once
    token = done.stdout.strip()
    tid = done.stderr.split()[1]
    marker = f"/audited/{uuid.uuid4().hex}"
    assert call(proxy, token, "GET", marker).status_code == 200

    def audited():
        nonlocal recs
        recs = [json.loads(line) for line in rr_cli(proxy.home, "audit", "--json", "--proxy", "agent").stdout.splitlines()]
        return [r for r in recs if r["path"] == marker]

    recs: list[dict] = []
    found = eventually(audited, what="the audit record")
    assert (found[0]["credential"], found[0]["token"]) == ("parent", tid)
    assert token not in json.dumps(recs)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ttl", "forever"], "--ttl"),
        (["--ttl", "90d"], "between 1s and 30d"),
        (["--ttl", "1h", "--target", "nope"], "not a target of proxy agent"),
        (["--ttl", "1h", "--allow", "GET"], "METHOD PATH"),
        (["--ttl", "1h", "--max-requests", "0"], "--max-requests 0: must be between 1 and"),
    ],
)
def test_mint_refuses_with_a_message(proxy, args, message):
    done = mint(proxy, *args)
    assert done.returncode == 1 and done.stdout == "" and message in done.stderr


def test_list_and_revoke_stop_a_token_within_the_reload_interval(proxy):
    done = mint(proxy, "--ttl", "1h", "--target", "api", "--allow", "GET /*", "--note", "ci job 7")
    token, tid = done.stdout.strip(), done.stderr.split()[1]
    keep = minted(proxy, "--ttl", "1h")
    assert call(proxy, token, "GET", "/before-revoke").status_code == 200
    listed = {r["id"]: r for r in json.loads(rr_cli(proxy.home, "token", "list", "--json").stdout)}
    assert listed[tid]["state"] == "active" and listed[tid]["targets"] == ["api"] and listed[tid]["note"] == "ci job 7"
    assert listed[tid]["allow"] == ["GET /*"] and (listed[tid]["proxy"], listed[tid]["credential"]) == ("agent", "parent")
    assert token not in json.dumps(listed)
    assert tid in rr_cli(proxy.home, "token", "list", env={"COLUMNS": "60"}).stdout  # the id whole, even narrow
    assert f"{tid}: revoked" in rr_cli(proxy.home, "token", "revoke", tid).stdout
    r = eventually(lambda: (r := call(proxy, token, "GET", "/after-revoke")).status_code != 200 and r, what="the revoked token refused")
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    assert call(proxy, keep, "GET", "/others-unaffected").status_code == 200
    listed = {r["id"]: r for r in json.loads(rr_cli(proxy.home, "token", "list", "--json").stdout)}
    assert listed[tid]["state"] == "revoked"
    assert "already revoked" in rr_cli(proxy.home, "token", "revoke", tid).stdout
    unknown = rr_cli(proxy.home, "token", "revoke", "tok_nope", check=False)
    assert unknown.exit_code == 1 and "no minted token 'tok_nope'" in unknown.output


def test_a_prefix_allows_whole_segments_only(proxy):
    """`/v1*` must not hand `/v1admin` to an agent: the mint says what it matches."""
    done = mint(proxy, "--ttl", "1h", "--allow", "GET /v1*")
    assert done.returncode == 0 and 'matches /v1 and paths under /v1/ (whole segments), not e.g. /v1admin' in done.stderr
    token = done.stdout.strip()
    assert call(proxy, token, "GET", "/v1/charges").status_code == 200
    assert call(proxy, token, "GET", "/v1").status_code == 200
    for sneaky in ("/v1admin", "/v1admin/users", "/v1%61dmin"):
        r = call(proxy, token, "GET", sneaky)
        assert r.status_code == 403 and "allow list" in r.json()["error"]["message"], sneaky
    assert "note:" not in mint(proxy, "--ttl", "1h", "--allow", "GET /v1/*").stderr


# Report mode trials the parent's access rules; a token's narrowing and the request
# validation are not access rules and must hold even when a parent rule would deny.
REPORT_POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    validate: [{{methods: [POST], path: "^/v1/charges$", json_schema: {{type: object, required: [amount]}}}}]
    credentials: [{{name: live, kind: bearer, secret: sk_tokens_SECRET}}]
  - name: other
    hosts: ["localhost:{port}"]
    allow_private_addresses: true
    credentials: [{{name: o, kind: bearer, secret: sk_other_SECRET}}]
proxies:
  - name: agent
    mode: report
    targets: [{{target: api}}, {{target: other}}]
    credentials:
      - name: parent
        auth: api_key
        secret: KEY_parent
        rules:
          - {{name: no-deletes, effect: deny, methods: [DELETE]}}
          - {{name: no-posts, effect: deny, methods: [POST]}}
"""


@pytest.fixture(scope="module")
def report_proxy(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-tokens-report")
    prepare_home(home, REPORT_POLICY.format(port=upstream.port))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        p.upstream_port = upstream.port
        yield p


def test_report_mode_never_lifts_a_tokens_narrowing(report_proxy, upstream):
    token = minted(report_proxy, "--ttl", "1h", "--target", "api", "--allow", "GET /v1/*")
    # the parent's own key: its rule would deny, report mode forwards (that is what report mode is)
    marker = uuid.uuid4().hex
    assert call(report_proxy, "KEY_parent", "DELETE", f"/v1/{marker}").status_code == 200
    assert [r for r in upstream.received if marker in r.path]
    assert call(report_proxy, token, "GET", f"/v1/{uuid.uuid4().hex}").status_code == 200
    attempts = {
        "other target": ("DELETE", "localhost", "minted token's targets"),
        "other method": ("DELETE", "127.0.0.1", "allow list"),
    }
    for what, (method, host, message) in attempts.items():
        marker = uuid.uuid4().hex
        r = call(report_proxy, token, method, f"/v1/{marker}", host=host)
        assert r.status_code == 403, (what, r.text)
        assert r.json()["error"]["code"] == "access-denied" and message in r.json()["error"]["message"], what
        assert [x for x in upstream.received if marker in x.path] == [], f"{what}: forwarded with the target's secret"


def test_report_mode_still_validates_request_bodies(report_proxy, upstream):
    marker = uuid.uuid4().hex
    verify = ssl.create_default_context(cafile=str(report_proxy.ca))
    with httpx.Client(proxy=report_proxy.url("agent", "KEY_parent"), verify=verify, timeout=10) as c:
        r = c.post(f"https://127.0.0.1:{report_proxy.upstream_port}/v1/charges", json={"note": marker})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid-request", r.text
    assert [x for x in upstream.received if marker.encode() in (x.body or b"")] == []
