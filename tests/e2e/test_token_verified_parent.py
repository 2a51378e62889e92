"""A verified JWT caller as a minted token's parent (an agent launched by a
user gets a child token), through real `rr token mint` and `rr run` processes
against a local identity provider: the user's token is verified at minting by
the same verifiers the data plane runs, the child carries the verified claims
so the parent's claims rules — deny rules included — still decide, it never
outlives the user's token, and nothing unverified can be minted."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

import pytest

from rr_addon.testing.home import database_url, prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually
from tests.e2e.test_tokens import RR, call

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_verified_SECRET}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    rules:
      - {{name: writers-only, effect: deny, methods: [POST], claims: [{{claim: scope, value: "payments:write", presence: absent}}]}}
    credentials:
      - name: users
        auth: jwt_verify
        jwks_url: {jwks}
        issuer: {issuer}
        audience: {audience}
        rules: [{{name: no-intern-refunds, effect: deny, path: "^/refunds", claims: [{{claim: role, value: "^intern$"}}]}}]
      - name: partners
        auth: jwt_verify
        jwks_url: {jwks}
        issuer: {issuer}
        audience: partners
      - {{name: ci, auth: api_key, secret: KEY_ci}}
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki, idp):
    home = tmp_path_factory.mktemp("rr-verified-parent")
    prepare_home(home, POLICY.format(port=upstream.port, jwks=idp.jwks_url, issuer=idp.issuer, audience="api"))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        p.upstream_port = upstream.port
        p.idp = idp
        yield p


def mint(proxy, user_token: str | None, *args: str, credential: str = "users", process: bool = False) -> subprocess.CompletedProcess:
    """`rr token mint` with the user's token on stdin: in this process (no interpreter start,
    seconds on a loaded machine), or as a real `rr` process with `process=True`."""
    jwt = ["--jwt-file", "-"] if user_token is not None else []
    if not process:
        done = rr_cli(proxy.home, "token", "mint", "--proxy", "agent", "--credential", credential, *jwt, *args, check=False, input=user_token or "")
        return subprocess.CompletedProcess(["rr", "token", "mint", *args], done.exit_code, done.stdout, done.stderr)
    env = {k: v for k, v in os.environ.items() if k != "RR_MASTER_KEY"}
    env["RR_HOME"] = str(proxy.home)
    if database_url(proxy.home):
        env["RR_DATABASE_URL"] = database_url(proxy.home)
    return subprocess.run(
        [str(RR), "token", "mint", "--proxy", "agent", "--credential", credential, *jwt, *args],
        input=user_token or "", env=env, capture_output=True, text=True, timeout=60,
    )


def child(proxy, user_token: str, *args: str) -> str:
    done = mint(proxy, user_token, "--ttl", "10m", *args)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 and done.stdout.startswith("rrt1.")
    return done.stdout.strip()


def test_a_users_child_works_and_is_bound_to_the_user(proxy):
    user = proxy.idp.token(sub="alice", role="admin", scope="payments:write")
    done = mint(proxy, user, "--ttl", "10m", "--allow", "* /refunds/*", process=True)  # the real command, once
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert "subject alice" in done.stderr
    marker = f"/refunds/{time.time_ns()}"
    assert call(proxy, token, "POST", marker).status_code == 200
    audited = lambda: [json.loads(x) for x in rr_cli(proxy.home, "audit", "--json", "--proxy", "agent").stdout.splitlines() if marker in x]  # noqa: E731
    recs = eventually(audited, what="the audit record")
    tid = done.stderr.split()[1]
    assert (recs[0]["credential"], recs[0]["token"], recs[0]["subject"], recs[0]["verification"]) == ("users", tid, "alice", "minted token")
    assert token not in json.dumps(recs) and user not in json.dumps(recs)
    assert call(proxy, token, "GET", "/charges").status_code == 403  # still only narrows
    listed = [r for r in json.loads(rr_cli(proxy.home, "token", "list", "--json").stdout) if r["credential"] == "users"]
    assert any(r["subject"] == "alice" for r in listed)
    assert user not in json.dumps(listed)


def test_the_parents_claims_rules_still_decide_for_the_child(proxy):
    """Deny rules over claims fire for the child exactly as for the user: an intern's
    agent cannot escape `no-intern-refunds`, a reader's cannot escape `writers-only`."""
    intern = proxy.idp.token(sub="bob", role="intern", scope="payments:write")
    assert call(proxy, intern, "POST", "/refunds/1").status_code == 403  # the user
    r = call(proxy, child(proxy, intern), "POST", "/refunds/1")  # the child
    assert r.status_code == 403 and "no-intern-refunds" in r.json()["error"]["message"]
    reader = proxy.idp.token(sub="carol", role="admin", scope="payments:read")
    r = call(proxy, child(proxy, reader), "POST", "/charges")
    assert r.status_code == 403 and "writers-only" in r.json()["error"]["message"]
    assert call(proxy, child(proxy, reader), "GET", "/charges").status_code == 200


def test_a_child_never_outlives_the_users_token(proxy):
    user = proxy.idp.token(sub="dave", role="admin", exp_in=5)
    token = child(proxy, user)  # asked for 10 minutes; in-process: no CLI start while the user's token runs out
    payload = lambda t: json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "=" * (-len(t.split(".")[1]) % 4)))  # noqa: E731
    assert payload(token)["exp"] == payload(user)["exp"]  # capped at the user's token
    r = eventually(lambda: (r := call(proxy, token, "GET", "/short")).status_code != 200 and r, what="the child refused after the user's token")
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-jwt", "give the caller's token with --jwt-file"),
        ("forged", "does not verify"),
        ("expired", "does not verify"),
        ("other-credential", "accepted by agent/partners, not by agent/users"),
        ("static-parent", "is a static key"),
        ("no-exp", "does not verify"),
    ],
)
def test_nothing_unverified_is_minted(proxy, case, message):
    idp = proxy.idp
    good = idp.token(sub="mallory", role="admin")
    head, body, _ = good.split(".")
    user, credential = {
        "no-jwt": (None, "users"),
        "forged": (f"{head}.{body}.{'A' * 342}", "users"),
        "expired": (idp.token(sub="mallory", exp_in=-120), "users"),
        "other-credential": (idp.token(sub="mallory", aud="partners"), "users"),
        "static-parent": (good, "ci"),
        "no-exp": (idp.token(sub="mallory", exp_in=None), "users"),  # jwt_verify requires exp
    }[case]
    done = mint(proxy, user, "--ttl", "10m", credential=credential)
    assert done.returncode == 1 and done.stdout == "" and message in done.stderr, done.stderr
    if user:
        assert user not in done.stderr


def test_changing_how_the_parent_verifies_voids_its_children(proxy, upstream):
    token = child(proxy, proxy.idp.token(sub="erin", role="admin"))
    assert call(proxy, token, "GET", "/before").status_code == 200
    path = proxy.home / "next.yaml"
    idp = proxy.idp
    path.write_text(POLICY.format(port=upstream.port, jwks=idp.jwks_url, issuer=idp.issuer, audience="api-v2"))
    try:
        rr_cli(proxy.home, "apply", "-f", str(path), "--prune")
        r = eventually(lambda: (r := call(proxy, token, "GET", "/after")).status_code != 200 and r, what="the child refused after its parent's audience changed")
        assert r.status_code == 401 and "verification changed" in r.json()["error"]["message"]
    finally:
        path.write_text(POLICY.format(port=upstream.port, jwks=idp.jwks_url, issuer=idp.issuer, audience="api"))
        rr_cli(proxy.home, "apply", "-f", str(path), "--prune")
