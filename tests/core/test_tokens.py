"""Minted tokens in the pure core: verification, expiry, revocation and narrowing (table)."""

import dataclasses

import pytest

from rr_addon.core import reasons, tokens
from rr_addon.core.decide import decide
from rr_addon.core.types import RequestFacts
from rr_addon.testing.snapshots import TEST_HMAC_KEY, snapshot_from

NOW = 1_800_000_000.0

CONFIG = {
    "targets": [
        {"name": "stripe", "hosts": ["api.stripe.com"], "credentials": [{"name": "live", "kind": "bearer", "secret": "sk_live"}]},
        {"name": "github", "hosts": ["api.github.com"], "credentials": [{"name": "gh", "kind": "bearer", "secret": "ghp"}]},
    ],
    "proxies": [
        {
            "name": "billing",
            "targets": [{"target": "stripe"}, {"target": "github"}],
            "credentials": [
                {"name": "agent", "auth": "api_key", "secret": "key-1",
                 "rules": [{"name": "no-deletes", "effect": "deny", "methods": ["DELETE"]}]},
                {"name": "off", "auth": "api_key", "secret": "key-off", "active": False},
            ],
        },
    ],
}
SNAP = snapshot_from(CONFIG)


def mint(key=TEST_HMAC_KEY, **kw) -> str:
    base = dict(id="tok_1", proxy="billing", credential="agent", expires_at=int(NOW) + 60)
    base.update(kw)
    return tokens.encode(tokens.Token(**base), key)


def ask(secret, method="GET", host="api.stripe.com", path="/v1/charges", snap=SNAP, now=NOW):
    return decide(snap, RequestFacts(method, "https", host, 443, path, (("x-rr-authorization", secret),)), now)


NARROW = dict(targets=("stripe",), allow=(tokens.Allow("GET", "/v1/charges*"), tokens.Allow("POST", "/v1/refunds")))


@pytest.mark.parametrize(
    "secret, method, host, path, status, reason",
    [
        pytest.param(mint(), "GET", "api.github.com", "/user", 200, reasons.ALLOWED, id="unnarrowed-any-target"),
        pytest.param(mint(**NARROW), "GET", "api.stripe.com", "/v1/charges/ch_1", 200, reasons.ALLOWED, id="inside-prefix"),
        pytest.param(mint(**NARROW), "POST", "api.stripe.com", "/v1/refunds", 200, reasons.ALLOWED, id="inside-exact"),
        pytest.param(mint(**NARROW), "GET", "api.github.com", "/user", 403, reasons.TOKEN_TARGET, id="other-target"),
        pytest.param(mint(**NARROW), "POST", "api.stripe.com", "/v1/charges", 403, reasons.TOKEN_NOT_ALLOWED, id="other-method"),
        pytest.param(mint(**NARROW), "POST", "api.stripe.com", "/v1/refunds/x", 403, reasons.TOKEN_NOT_ALLOWED, id="exact-not-prefix"),
        pytest.param(mint(**NARROW), "GET", "api.stripe.com", "/v1/customers", 403, reasons.TOKEN_NOT_ALLOWED, id="other-path"),
        # canonicalised before the allow list: no dot-segment escape
        pytest.param(mint(**NARROW), "GET", "api.stripe.com", "/v1/charges/../customers", 403, reasons.TOKEN_NOT_ALLOWED, id="dot-segments"),
        # the parent's rules still apply, and are reported first
        pytest.param(mint(allow=(tokens.Allow("*", "/*"),)), "DELETE", "api.stripe.com", "/v1/x", 403, "denied by rule", id="parent-rule"),
        pytest.param(mint(expires_at=int(NOW)), "GET", "api.stripe.com", "/v1/charges", 401, reasons.TOKEN_EXPIRED, id="expired"),
        pytest.param(mint(key=b"another key" * 3), "GET", "api.stripe.com", "/v1/charges", 401, reasons.TOKEN_BAD_SIGNATURE, id="other-key"),
        pytest.param(mint()[:-2] + "AA", "GET", "api.stripe.com", "/v1/charges", 401, reasons.TOKEN_BAD_SIGNATURE, id="bad-signature"),
        pytest.param("rrt1.garbage", "GET", "api.stripe.com", "/v1/charges", 401, reasons.TOKEN_BAD_SIGNATURE, id="malformed"),
        pytest.param(mint(credential="gone"), "GET", "api.stripe.com", "/v1/charges", 401, reasons.TOKEN_PARENT_GONE, id="parent-gone"),
        pytest.param(mint(credential="off"), "GET", "api.stripe.com", "/v1/charges", 401, reasons.INACTIVE_CREDENTIAL, id="parent-inactive"),
    ],
)
def test_token_decisions(secret, method, host, path, status, reason):
    out = ask(secret, method, host, path)
    assert (out.decision.status, out.decision.reason) == (status, reason)
    if status != 401:
        assert (out.identity.proxy, out.identity.credential, out.identity.token) == ("billing", "agent", "tok_1")
    if out.decision.reason in (reasons.TOKEN_TARGET, reasons.TOKEN_NOT_ALLOWED):
        assert (out.decision.scope, out.decision.rule) == ("token", "tok_1")


def test_tampered_payload_is_refused():
    good = mint(targets=("stripe",))
    other = mint(targets=("github",))
    forged = other.rsplit(".", 1)[0] + "." + good.rsplit(".", 1)[1]
    assert ask(forged, host="api.github.com", path="/user").decision.reason == reasons.TOKEN_BAD_SIGNATURE


def test_revoked():
    snap = dataclasses.replace(SNAP, revoked_tokens=frozenset({"tok_1"}))
    assert ask(mint(), snap=snap).decision.reason == reasons.TOKEN_REVOKED
    assert ask(mint(id="tok_2"), snap=snap).decision.status == 200


def test_plain_key_carries_no_token_id():
    out = ask("key-1")
    assert out.decision.status == 200 and out.identity.token is None


@pytest.mark.parametrize("text", ["GET", "GET v1", "G-T /x", "GET /a*b", "GET  "])
def test_parse_allow_refuses(text):
    with pytest.raises(ValueError, match="--allow"):
        tokens.parse_allow(text)


def test_parse_allow():
    assert tokens.parse_allow("get /v1/*") == tokens.Allow("GET", "/v1/*")
    assert tokens.parse_allow("* /x") == tokens.Allow("*", "/x")


def test_a_signature_has_one_spelling():
    """The base64 decoder drops characters outside its alphabet: an altered spelling is refused."""
    key = b"k" * 32
    good = tokens.encode(tokens.Token(id="tok_1", proxy="p", credential="c", expires_at=2e9), key)
    assert not isinstance(tokens.decode(good, key), str)
    signed, _, sig = good.rpartition(".")
    assert tokens.decode(f"{signed}.{sig[:4]}!{sig[4:]}", key) == reasons.TOKEN_BAD_SIGNATURE


def test_a_token_whose_parent_verifies_tokens_itself_is_refused():
    """A child of a jwt_verify/oauth2 credential (no digest: it verifies tokens) would enter
    with no claims, so claims rules would not fire."""
    from types import MappingProxyType

    from rr_addon.core.decide import minted_parent

    proxy = SNAP.proxies["billing"]
    verifier = dataclasses.replace(proxy.callers["agent"], digest=None)
    snap = dataclasses.replace(SNAP, proxies=MappingProxyType({"billing": dataclasses.replace(proxy, callers=MappingProxyType({"agent": verifier}))}))
    assert minted_parent(snap, mint(), NOW) == (None, reasons.TOKEN_PARENT_VERIFIES)
    assert minted_parent(SNAP, mint(), NOW)[1] is None
    # a verifier's child carries the claims verified at minting; a static key's child carries none
    assert minted_parent(snap, mint(claims={"sub": "alice"}), NOW)[1] is None
    assert minted_parent(SNAP, mint(claims={"sub": "alice"}), NOW) == (None, reasons.TOKEN_PARENT_VERIFIES)


def test_a_verified_callers_child_is_decided_on_its_claims():
    """The claims rules of the parent see the child's claims: a deny rule over a claim still fires."""
    from types import MappingProxyType

    from rr_addon.policy.schema import Config
    from rr_addon.core.snapshot import compile_snapshot

    config = Config.model_validate({
        "targets": CONFIG["targets"],
        "proxies": [{
            "name": "billing", "targets": [{"target": "stripe"}],
            "credentials": [{"name": "users", "auth": "jwt_verify", "issuer": "https://idp", "audience": "api", "secret": "s" * 32,
                             "rules": [{"name": "no-interns", "effect": "deny", "claims": [{"claim": "role", "value": "^intern$"}]}]}],
        }],
    })
    snap = compile_snapshot(config, version=1, hmac_key=TEST_HMAC_KEY, target_secrets={("stripe", "live"): "sk", ("github", "gh"): "g"}, caller_digests={},
                            caller_secrets={("billing", "users"): "s" * 32})
    assert isinstance(snap.proxies, MappingProxyType)
    admin = ask(mint(credential="users", claims={"sub": "alice", "role": "admin"}), snap=snap)
    assert admin.decision.status == 200 and admin.identity.claims == {"sub": "alice", "role": "admin"}
    intern = ask(mint(credential="users", claims={"sub": "bob", "role": "intern"}), snap=snap)
    assert (intern.decision.status, intern.decision.rule) == (403, "no-interns")
    assert ask(mint(credential="users"), snap=snap).decision.reason == reasons.TOKEN_PARENT_VERIFIES


def test_a_token_is_bound_to_its_parents_generation():
    """Re-creating the parent or rotating its secret renews its generation: the children stop."""
    from types import MappingProxyType

    proxy = SNAP.proxies["billing"]
    renewed = dataclasses.replace(proxy.callers["agent"], generation="g2")
    snap = dataclasses.replace(SNAP, proxies=MappingProxyType({"billing": dataclasses.replace(proxy, callers=MappingProxyType({"agent": renewed}))}))
    assert ask(mint(generation="g2"), snap=snap).decision.status == 200
    assert ask(mint(generation="g1"), snap=snap).decision.reason == reasons.TOKEN_PARENT_CHANGED
    # a token minted before generations existed carries none
    assert ask(mint(), snap=snap).decision.reason == reasons.TOKEN_PARENT_CHANGED
    assert tokens.decode(mint(generation="g2"), TEST_HMAC_KEY).generation == "g2"


def test_max_requests_is_one_counter_in_the_meters_atomic_call():
    from rr_addon.core.decide import admit, quota_headers, quota_outcome
    from rr_addon.core.quota import CheckResult

    token = tokens.decode(mint(max_requests=3), TEST_HMAC_KEY)
    assert token.max_requests == 3
    plan = SNAP.proxies["billing"].meters.plan("agent", None, NOW)
    budgeted = tokens.with_budget(plan, token)
    op = budgeted.ops[-1]
    assert budgeted.ops[:-1] == plan.ops and (op.key, op.amount, op.limit, op.window.end) == ("token:tok_1", 1, 3, token.expires_at)
    assert tokens.with_budget(plan, tokens.decode(mint(), TEST_HMAC_KEY)) is plan
    refused = budgeted.verdict(CheckResult(False, tuple(0 for _ in plan.ops) + (3,), (len(plan.ops),)))
    admission = admit(SNAP, RequestFacts("GET", "https", "api.stripe.com", 443, "/v1/x", (("x-rr-authorization", mint(max_requests=3)),)), NOW)
    out = quota_outcome(admission, refused)
    assert (out.decision.status, out.decision.code, out.decision.reason) == (429, "quota-exceeded", reasons.TOKEN_REQUESTS_USED)
    assert (out.decision.scope, out.decision.rule) == ("token", "tok_1")
    assert quota_headers(refused) == ()  # no Retry-After: the budget never resets


@pytest.mark.parametrize("n", [0, -1, True, "3", 1.5])
def test_a_signed_but_nonsensical_budget_is_refused(n):
    """Only rr mints, but a token it cannot read is refused, never read as unlimited."""
    import base64
    import hashlib
    import hmac as hm
    import json

    body = base64.urlsafe_b64encode(json.dumps({"id": "t", "p": "billing", "c": "agent", "exp": int(NOW) + 60, "n": n}).encode()).rstrip(b"=").decode()
    signed = tokens.PREFIX + body
    sig = base64.urlsafe_b64encode(hm.new(tokens.signing_key(TEST_HMAC_KEY), signed.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    assert tokens.decode(f"{signed}.{sig}", TEST_HMAC_KEY) == reasons.TOKEN_BAD_SIGNATURE


@pytest.mark.parametrize(
    "allow, path, allowed",
    [
        ("/v1*", "/v1", True),
        ("/v1*", "/v1/admin", True),
        ("/v1*", "/v1admin", False),  # a string prefix would have let this through
        ("/v1*", "/v1-internal/x", False),
        ("/v1/*", "/v1/x", True),
        ("/v1/*", "/v1/", True),
        ("/v1/*", "/v1", False),
        ("/v1/charges*", "/v1/charges/ch_1", True),
        ("/v1/charges*", "/v1/charges_export", False),
        ("/*", "/anything/at/all", True),
    ],
)
def test_a_prefix_matches_whole_segments(allow, path, allowed):
    assert tokens.Allow("GET", allow).matches("GET", path) is allowed
    assert (tokens.Allow("GET", allow).segment_note is None) == (allow.endswith("/*"))


def test_report_mode_trials_the_parents_rules_never_the_tokens_narrowing():
    trial = {**CONFIG, "proxies": [{**CONFIG["proxies"][0], "mode": "report"}]}
    snap = snapshot_from(trial)
    would = ask(mint(), "DELETE", "api.stripe.com", "/v1/x", snap=snap)
    assert would.report_only and would.decision.reason.startswith("denied by rule")  # the parent's rule: trialled
    for host, method, reason in (("api.github.com", "DELETE", reasons.TOKEN_TARGET), ("api.stripe.com", "DELETE", reasons.TOKEN_NOT_ALLOWED)):
        out = ask(mint(**NARROW), method, host, "/v1/charges", snap=snap)
        assert (out.decision.status, out.decision.reason, out.report_only) == (403, reason, False), host
