"""Deterministic token -> credential mapping (rr_addon.identity.matching)."""

from __future__ import annotations

import asyncio

import pytest

from rr_addon import identity as ident
from rr_addon.identity import Verified
from rr_addon.identity.introspection import Introspector, OAuth2Verifier
from rr_addon.identity.jwks import RemoteJwks
from rr_addon.identity.jwt_verify import ClaimRules, JwtVerifier
from rr_addon.identity.jwt_verify import parse as _parse
from rr_addon.identity.matching import (
    Candidate,
    CredentialIndex,
    MatchSpec,
    check_unambiguous,
    claims_disjoint,
    conflicts,
    could_introspect,
    identify,
    identify_cached,
    literal_alternatives,
    prewarm,
)
from rr_addon.testing.idp import run_with_http
from rr_addon.testing.idp import compact as _compact

# ---------------------------------------------------------------- literal analysis


@pytest.mark.parametrize(
    ("pattern", "alternatives"),
    [
        ("^ci$", [("ci", True)]),
        ("^svc-a-", [("svc-a-", False)]),
        ("^(?:ci|prod)$", [("ci", True), ("prod", True)]),
        ("^(ci|prod)", [("ci", False), ("prod", False)]),
        (r"^a\.b$", [("a.b", True)]),
        (r"^a\$", [("a$", False)]),
        ("^$", [("", True)]),
        ("ci", None),  # unanchored: matches inside anything
        ("^ci|prod$", None),  # (^ci)|(prod$)
        ("^(?:a)|(?:b)$", None),
        ("^c.$", None),
        (r"^\d+$", None),
        ("^(?i)ci$", None),
        ("^[a-z]$", None),
    ],
)
def test_literal_alternatives(pattern, alternatives):
    assert literal_alternatives(pattern) == alternatives


@pytest.mark.parametrize(
    ("a", "b", "disjoint"),
    [
        ({"env": "^ci$"}, {"env": "^prod$"}, True),
        ({"env": "^(?:ci|dev)$"}, {"env": "^prod$"}, True),
        ({"env": "^(?:ci|prod)$"}, {"env": "^prod$"}, False),
        ({"sub": "^svc-a-"}, {"sub": "^svc-b-"}, True),
        ({"sub": "^svc-"}, {"sub": "^svc-b-"}, False),
        ({"sub": "^svc-"}, {"sub": "^svc-b$"}, False),
        ({"sub": "^svc-"}, {"sub": "^ops$"}, True),
        ({"env": "prod"}, {"env": "^ci$"}, False),  # not provable
        ({"env": "^ci$"}, {"team": "^ops$"}, False),  # different claims: a token may carry both
        ({}, {}, False),
        ({"env": "^ci$", "x": "."}, {"env": "^prod$"}, True),
    ],
)
def test_claims_disjoint(a, b, disjoint):
    assert claims_disjoint(a, b) == disjoint
    assert claims_disjoint(b, a) == disjoint


# ---------------------------------------------------------------- configuration check


def spec(label, iss="https://idp/", aud="api", claims=None, local=True, url=None):
    return MatchSpec(f"proxies[p].credentials[{label}]", iss, aud, claims or {}, local, url)


def test_same_issuer_and_audience_is_refused_naming_both():
    with pytest.raises(ValueError) as e:
        check_unambiguous([spec("a"), spec("b")])
    assert str(e.value).startswith("proxies[p].credentials[a] and proxies[p].credentials[b] could both match one token")


@pytest.mark.parametrize(
    ("specs", "ok"),
    [
        ([spec("a"), spec("b", aud="other")], True),
        ([spec("a"), spec("b", iss="https://other/")], True),
        ([spec("a", claims={"env": "^ci$"}), spec("b", claims={"env": "^prod$"})], True),
        ([spec("a", claims={"env": "^ci"}), spec("b", claims={"env": "^ci-2$"})], False),
        ([spec("a", claims={"env": "ci"}), spec("b", claims={"env": "prod"})], False),
        # introspection credentials: an unset issuer/audience matches any
        ([spec("a", None, None, local=False, url="https://idp/i"), spec("b", aud="x", local=False, url="https://idp/i")], False),
        ([spec("a", aud="x", local=False, url="https://idp/i"), spec("b", aud="y", local=False, url="https://idp/i")], True),
        # local JWT verification takes precedence over introspection: no overlap across the two routes
        ([spec("a"), spec("b", None, None, local=False, url="https://idp/i")], True),
        # two introspection endpoints: which IdP issued an opaque token?
        ([spec("a", aud="x", local=False, url="https://one/i"), spec("b", aud="y", local=False, url="https://two/i")], False),
    ],
)
def test_conflicts(specs, ok):
    assert (conflicts(specs) == []) == ok


def test_two_introspection_endpoints_are_named():
    (sentence,) = conflicts([spec("a", aud="x", local=False, url="https://one/i"), spec("b", aud="y", local=False, url="https://two/i")])
    assert "proxies[p].credentials[a] and proxies[p].credentials[b] introspect at different endpoints" in sentence


# ---------------------------------------------------------------- request time, against the IdP


run = run_with_http


def local(idp, http, jwks, name, aud="api", claims=None):
    rules = ClaimRules(issuer=idp.issuer, audience=aud, required_claims=claims)
    verifier = JwtVerifier(keys=jwks, algorithms=["RS256"], rules=rules)
    return Candidate(spec(name, idp.issuer, aud, claims), verifier, name)


def introspected(idp, http, name):
    intro = Introspector(idp.introspection_url, "rr", "rr-client-secret", http=http)
    verifier = OAuth2Verifier(rules=ClaimRules(issuer=None, audience=None, require_exp=False), introspector=intro)
    return Candidate(spec(name, None, None, local=False, url=idp.introspection_url), verifier, name)


def test_identify_routes_by_issuer_audience_then_required_claims(idp):
    tokens = {
        "ci": idp.token(env="ci"),
        "prod": idp.token(env="prod"),
        "dev": idp.token(env="dev"),
        "other aud": idp.token(aud="billing"),
        "two auds": idp.token(aud=["api", "billing"], env="ci"),
        "foreign": idp.token(iss="https://elsewhere/"),
        "opaque": idp.opaque(sub="robot"),
        "junk": "x.y.z",
    }

    async def body(http):
        jwks = RemoteJwks(idp.jwks_url, http=http)
        entries = [
            local(idp, http, jwks, "ci", claims={"env": "^ci$"}),
            local(idp, http, jwks, "prod", claims={"env": "^prod$"}),
            local(idp, http, jwks, "billing", aud="billing"),
            introspected(idp, http, "opaque"),
        ]
        assert conflicts(c.spec for c in entries) == []
        index = CredentialIndex(entries)
        assert identify_cached(index, tokens["ci"]) is None  # cold keys: the glue awaits
        out = {}
        for name, token in tokens.items():
            out[name] = await identify(index, token)
            assert identify_cached(index, token) is not None or name == "junk"
        return out

    out = run(body)
    assert out["ci"][0].value == "ci" and isinstance(out["ci"][1], Verified)
    assert out["prod"][0].value == "prod"
    assert (out["dev"].reason, out["dev"].detail) == (ident.CLAIM_INVALID, "env")
    assert out["other aud"][0].value == "billing"
    assert out["two auds"].reason == ident.AMBIGUOUS_MATCH
    assert out["two auds"].detail == "proxies[p].credentials[ci] and proxies[p].credentials[billing]"
    # No local candidate for this issuer: introspected, and the IdP vouches for what it signed.
    assert out["foreign"][0].value == "opaque" and out["foreign"][1].path == ident.PATH_INTROSPECTION
    assert out["opaque"][0].value == "opaque" and out["opaque"][1].subject == "robot"
    assert out["junk"].reason == ident.INACTIVE
    assert idp.count("jwks") == 1


def test_no_verifying_credentials_means_no_match():
    index = CredentialIndex([])
    assert identify_cached(index, "anything").reason == ident.NO_MATCHING_CREDENTIAL
    assert asyncio.run(identify(index, "anything")).path == ident.PATH_MATCH


def test_prewarm_fetches_every_remote_jwks_once(idp):
    async def body(http):
        jwks = RemoteJwks(idp.jwks_url, http=http)
        index = CredentialIndex([local(idp, http, jwks, "a"), local(idp, http, jwks, "b", aud="other"), introspected(idp, http, "o")])
        assert await prewarm(index) is True
        return identify_cached(index, idp.token())

    candidate, verified = run(body)
    assert candidate.value == "a" and isinstance(verified, Verified)
    assert idp.count("jwks") == 1 and idp.count("introspect") == 0


def test_prewarm_reports_missing_keys(idp):
    idp.down()

    async def body(http):
        return await prewarm(CredentialIndex([local(idp, http, RemoteJwks(idp.jwks_url, http=http), "a")]))

    assert run(body) is False


# ---------------------------------------------------------------- what may go to introspection


@pytest.mark.parametrize(
    "name, token, issuer, audience, expected",
    [
        ("opaque", "op-abc_DEF.123~+/==", None, None, True),
        ("opaque, issuer set", "op-abc", "https://idp/", "api", True),  # an opaque token names no issuer
        ("not b64token", "two words", None, None, False),
        ("comma", "a,b", None, None, False),
        ("empty", "", None, None, False),
        ("too long", "a" * 20000, None, None, False),
        ("jwt, same issuer", _compact({"alg": "RS256"}, {"iss": "https://idp/", "aud": "api"}), "https://idp/", "api", True),
        ("jwt, other issuer", _compact({"alg": "RS256"}, {"iss": "https://evil/", "aud": "api"}), "https://idp/", None, False),
        ("jwt, other audience", _compact({"alg": "RS256"}, {"iss": "https://idp/", "aud": "x"}), None, "api", False),
        ("jwt, audience list", _compact({"alg": "RS256"}, {"iss": "https://idp/", "aud": ["x", "api"]}), None, "api", True),
        ("jwt, any issuer", _compact({"alg": "RS256"}, {"iss": "https://evil/"}), None, None, True),
    ],
)
def test_could_introspect(name, token, issuer, audience, expected):
    spec = MatchSpec("proxies[p].credentials[o]", issuer, audience, local_jwt=False, introspection_url="https://idp/introspect")
    assert could_introspect(spec, token, _parse(token)) is expected, name
