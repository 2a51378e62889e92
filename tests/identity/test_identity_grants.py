"""Upstream OAuth grants beyond client credentials (rr_addon.identity.grants,
client_auth, upstream_sources) against the local IdP, with a fake clock:
refresh tokens and their rotation, jwt-bearer assertions (explicit keys and a
Google service account), private_key_jwt client authentication, the safety
margin, fail-closed errors and single-flight bursts."""

from __future__ import annotations

import asyncio
import json

import jwt
import pytest

from rr_addon.policy.schema import Target
from rr_addon.identity import Http, Shared
from rr_addon.identity.client_auth import load_signing_key
from rr_addon.identity.grants import MemoryRefreshTokens
from rr_addon.identity.upstream_sources import build
from rr_addon.identity.upstream_token import UpstreamTokenError
from rr_addon.testing.idp import Clock, IdP, pem, pooled_key, run_with_http, service_account

run = run_with_http


@pytest.fixture
def idp():
    with IdP(token_ttl=100) as server:
        yield server


def cred(**fields):
    """A target credential as `rr apply` would validate it."""
    target = Target.model_validate({"name": "api", "hosts": ["api.example"], "credentials": [{"name": "c", **fields}]})
    return target.credentials[0]


def source(idp, http, clock, fields, secrets, *, store=None):
    src = build("api", cred(**fields), json.dumps(secrets, sort_keys=True) if isinstance(secrets, dict) else secrets, http=http, refresh_tokens=store)
    src._clock = clock
    src._skew, src._backoff = 10, 2
    return src


async def fetch(src):
    try:
        return await src.token()
    except UpstreamTokenError as e:
        return e


def refresh_fields(idp, **extra):
    return {"kind": "oauth2_refresh_token", "token_url": idp.token_url, "client_id": "rr", "client_secret": "x", "refresh_token": "x", **extra}


# ---------------------------------------------------------------- refresh tokens
def test_refresh_token_is_exchanged_and_each_rotation_is_spent_once(idp):
    clock, store = Clock(), MemoryRefreshTokens()
    seed = idp.refresh_token("rr", sub="alice")

    async def body(http):
        src = source(idp, http, clock, refresh_fields(idp, scope="contacts.read"), {"refresh_token": seed, "client_secret": "rr-client-secret"}, store=store)
        tokens = []
        for _ in range(3):
            tokens.append(await src.token())
            clock.advance(91)  # due for refresh
        return tokens

    tokens = run(body)
    assert len(set(tokens)) == 3 and idp.count("token") == 3
    sent = [form["refresh_token"] for endpoint, form in idp.received if endpoint == "token"]
    assert sent[0] == seed and len(set(sent)) == 3, "each refresh spends the token the last one rotated in"
    assert idp.reuses == 0 and not idp.refresh_token_active(seed)
    assert [i["grant"] for i in idp.issued] == ["refresh_token"] * 3 and idp.issued[0]["sub"] == "alice"
    assert idp.received[0][1]["scope"] == "contacts.read"


def test_a_burst_waiting_for_a_refresh_makes_one_idp_call(idp):
    idp.slow("token", 0.05)
    seed = idp.refresh_token("rr")

    async def body(http):
        src = source(idp, http, Clock(), refresh_fields(idp), {"refresh_token": seed, "client_secret": "rr-client-secret"}, store=MemoryRefreshTokens())
        return await asyncio.gather(*(src.token() for _ in range(50)))

    tokens = run(body)
    assert len(set(tokens)) == 1 and idp.count("token") == 1 and idp.reuses == 0


def test_a_revoked_refresh_token_is_a_credential_error_and_a_down_idp_is_unavailable(idp):
    clock = Clock()

    async def body(http):
        src = source(idp, http, clock, refresh_fields(idp), {"refresh_token": "rt-never-issued", "client_secret": "rr-client-secret"})
        refused = await fetch(src)
        good = source(idp, http, clock, refresh_fields(idp), {"refresh_token": idp.refresh_token("rr"), "client_secret": "rr-client-secret"})
        await good.token()
        idp.down()
        clock.advance(96)  # within the safety margin of a 100 s token: no longer used
        return refused, await fetch(good)

    refused, down = run(body)
    assert isinstance(refused, UpstreamTokenError) and refused.code == "upstream-credential-error" and "invalid_grant" in str(refused)
    assert isinstance(down, UpstreamTokenError) and down.code == "upstream-auth-unavailable"


def test_a_public_client_sends_only_its_client_id(idp):
    idp.public_clients.add("cli")
    seed = idp.refresh_token("cli")

    async def body(http):
        return await source(idp, http, Clock(), refresh_fields(idp, client_id="cli", client_auth="none", client_secret=None), {"refresh_token": seed}).token()

    run(body)
    form = idp.received[-1][1]
    assert form["client_id"] == "cli" and "client_secret" not in form


# ---------------------------------------------------------------- private_key_jwt
def test_private_key_jwt_client_authentication_for_client_credentials(idp):
    key = pooled_key("EC")
    idp.register_client_key("rr-pk", key)
    fields = {"kind": "oauth2_client_credentials", "token_url": idp.token_url, "client_id": "rr-pk", "client_auth": "private_key_jwt", "client_key": "x", "client_key_id": "k1"}

    async def body(http):
        src = source(idp, http, Clock(), fields, pem(key))
        first = await src.token()
        src._token = None  # force a second request: a fresh assertion
        return first, await src.token()

    run(body)
    forms = [f for e, f in idp.received if e == "token"]
    assert len(forms) == 2 and idp.refusals == []
    a = forms[0]["client_assertion"]
    assert forms[0]["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in forms[0] and forms[0]["client_id"] == "rr-pk"
    assert jwt.get_unverified_header(a) == {"alg": "ES256", "typ": "JWT", "kid": "k1"}
    claims = jwt.decode(a, options={"verify_signature": False})
    assert claims["iss"] == claims["sub"] == "rr-pk" and claims["aud"] == idp.token_url and claims["exp"] - claims["iat"] == 60
    assert forms[0]["client_assertion"] != forms[1]["client_assertion"], "a fresh jti every time"


def test_the_idp_refuses_a_replayed_or_foreign_client_assertion(idp):
    key = pooled_key("RSA")
    idp.register_client_key("rr-pk", key)
    fields = {"kind": "oauth2_client_credentials", "token_url": idp.token_url, "client_id": "rr-pk", "client_auth": "private_key_jwt", "client_key": "x"}

    async def body(http):
        good = source(idp, http, Clock(), fields, pem(key))
        await good.token()
        stranger = source(idp, http, Clock(), fields, pem(pooled_key("RSA", 1)))  # a key the IdP does not know for rr-pk
        return await fetch(stranger)

    error = run(body)
    assert isinstance(error, UpstreamTokenError) and error.code == "upstream-credential-error"
    assert idp.refusals == ["client assertion signature invalid"]
    import httpx

    replay = dict(idp.received[0][1])
    r = httpx.post(idp.token_url, data=replay)
    assert r.status_code == 401 and idp.refusals[-1] == "client assertion jti replayed"


# ---------------------------------------------------------------- jwt-bearer
def test_jwt_bearer_with_explicit_key_audience_and_resource(idp):
    key = pooled_key("RSA")
    idp.trust_issuer("svc@example", key)
    fields = {
        "kind": "oauth2_jwt_bearer", "token_url": idp.token_url, "issuer": "svc@example", "subject": "robot-7", "private_key": "x",
        "key_id": "2026-12", "scope": ["read", "write"], "audience": "https://api.example", "resource": "https://api.example/v2",
    }

    async def body(http):
        return await source(idp, http, Clock(), fields, {"private_key": pem(key)}).token()

    run(body)
    form = idp.received[-1][1]
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert (form["scope"], form["audience"], form["resource"]) == ("read write", "https://api.example", "https://api.example/v2")
    assert "client_id" not in form and "client_secret" not in form  # client_auth none by default
    (claims,) = idp.assertions
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("svc@example", "robot-7", idp.token_url)
    assert jwt.get_unverified_header(form["assertion"])["kid"] == "2026-12"
    assert idp.issued[-1]["sub"] == "robot-7"


def test_jwt_bearer_from_a_google_service_account_file(idp):
    key = pooled_key("RSA")
    idp.trust_issuer("rr-test@project.iam.gserviceaccount.com", key)
    sa = service_account(key, token_uri=idp.token_url)
    fields = {"kind": "oauth2_jwt_bearer", "token_url": idp.token_url, "service_account": "x", "scope": "https://www.googleapis.com/auth/bigquery"}

    async def body(http):
        return await source(idp, http, Clock(), fields, {"service_account": sa}).token()

    run(body)
    form = idp.received[-1][1]
    assert "scope" not in form, "Google takes the scope as a claim"
    (claims,) = idp.assertions
    assert claims["scope"] == "https://www.googleapis.com/auth/bigquery"
    assert claims["iss"] == claims["sub"] == "rr-test@project.iam.gserviceaccount.com"
    assert jwt.get_unverified_header(form["assertion"])["kid"] == "sa-key-1"


@pytest.mark.parametrize(
    ("secret", "match"),
    [
        ({"service_account": "{not json"}, "service account is not JSON"),
        ({"service_account": json.dumps({"type": "user"})}, '"type": "service_account"'),
        ({"service_account": "SA-OTHER-URI"}, "token_uri .* is not token_url"),
        ({"service_account": json.dumps({"type": "service_account", "client_email": "a@b", "private_key": "-----BEGIN nonsense"})}, "not an unencrypted PEM"),
    ],
    ids=["not-json", "not-a-service-account", "other-token-uri", "bad-key"],
)
def test_unusable_service_accounts_fail_at_build_without_echoing_the_key(idp, secret, match):
    if secret["service_account"] == "SA-OTHER-URI":
        secret = {"service_account": service_account(pooled_key("RSA"), token_uri="https://evil.example/token")}
    fields = {"kind": "oauth2_jwt_bearer", "token_url": idp.token_url, "service_account": "x"}
    with pytest.raises(ValueError, match=match) as e:
        build("api", cred(**fields), json.dumps(secret), http=Http())
    assert "PRIVATE KEY" not in str(e.value) and "nonsense" not in str(e.value)


def test_signing_keys_are_checked():
    with pytest.raises(ValueError, match="RSA key of 1024 bits"):
        from cryptography.hazmat.primitives.asymmetric import rsa

        load_signing_key(pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    with pytest.raises(ValueError, match="algorithm RS256 does not fit"):
        load_signing_key(pem(pooled_key("EC")), algorithm="RS256")
    assert load_signing_key(pem(pooled_key("Ed25519"))).algorithm == "EdDSA"


def test_sources_are_shared_across_reloads_until_a_secret_changes(idp):
    shared, http = Shared(), Http()
    fields = refresh_fields(idp)
    a = build("api", cred(**fields), json.dumps({"refresh_token": "r1", "client_secret": "s"}), http=http, shared=shared)
    b = build("api", cred(**fields), json.dumps({"refresh_token": "r1", "client_secret": "s"}), http=http, shared=shared)
    c = build("api", cred(**fields), json.dumps({"refresh_token": "r2", "client_secret": "s"}), http=http, shared=shared)
    assert a is b and a is not c
    assert "r1" not in repr(a) and "r1" not in repr(a.grant)


class FlakyStore(MemoryRefreshTokens):
    """The database down while a rotated token is being stored, then back."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def lease(self, key, seed, seconds):
        if self.down:
            raise ConnectionError("database down")
        return await super().lease(key, seed, seconds)

    async def save(self, key, generation, token):
        if self.down:
            raise ConnectionError("database down")
        return await super().save(key, generation, token)


def test_a_rotated_token_the_store_missed_is_spent_next_and_then_stored(idp):
    clock, store = Clock(), FlakyStore()
    seed = idp.refresh_token("rr")

    async def body(http):
        src = source(idp, http, clock, refresh_fields(idp), {"refresh_token": seed, "client_secret": "rr-client-secret"}, store=store)
        await src.token()  # stored: generation 1
        original_save = store.save

        async def failing_save(key, generation, token):
            raise ConnectionError("database down")

        store.save = failing_save
        clock.advance(91)
        second = await src.token()  # rotated by the IdP, not stored: kept in memory
        store.save = original_save
        clock.advance(91)
        third = await src.token()  # spends the unsaved token, stores the next one
        store.down = True
        clock.advance(96)
        down = await fetch(src)  # the store cannot lease: fail closed, never a stale token
        return second, third, down

    second, third, down = run(body)
    assert second != third and idp.reuses == 0 and idp.refusals == []
    sent = [f["refresh_token"] for e, f in idp.received if e == "token"]
    assert len(sent) == len(set(sent)) == 3
    assert store._tokens[("api", "c")][2] == 2, "the store caught up: generation 2 holds the newest token"
    assert isinstance(down, UpstreamTokenError) and down.code == "upstream-auth-unavailable" and "store unavailable" in str(down)


@pytest.mark.parametrize(
    "answer, detail",
    [
        ({"access_token": "at-ok", "token_type": "Bearer", "refresh_token": "rt\r\nSet-Cookie: x"}, "refresh_token not a usable string"),
        ({"access_token": "at-ok", "token_type": "Bearer", "refresh_token": 42}, "refresh_token not a usable string"),
        ({"access_token": "at-ok", "token_type": "Bearer", "refresh_token": "r" * 9000}, "refresh_token not a usable string"),
    ],
    ids=["header-injection", "not-a-string", "oversized"],
)
def test_a_hostile_idp_cannot_plant_an_unusable_refresh_token(idp, answer, detail):
    store = MemoryRefreshTokens()
    seed = idp.refresh_token("rr")
    idp.override("token", 200, answer)

    async def body(http):
        src = source(idp, http, Clock(), refresh_fields(idp), {"refresh_token": seed, "client_secret": "rr-client-secret"}, store=store)
        return await fetch(src)

    error = run(body)
    assert isinstance(error, UpstreamTokenError) and error.detail == detail and error.code == "upstream-auth-unavailable"
    assert store._tokens[("api", "c")][1] == seed, "the stored refresh token is unchanged"


def test_a_redirecting_token_endpoint_does_not_get_the_refresh_token_sent_elsewhere(idp):
    with IdP() as elsewhere:
        idp.override("token", 307, {"error": "moved"}, {"location": elsewhere.token_url})
        seed = idp.refresh_token("rr")

        async def body(http):
            src = source(idp, http, Clock(), refresh_fields(idp), {"refresh_token": seed, "client_secret": "rr-client-secret"})
            return await fetch(src)

        error = run(body)
        assert isinstance(error, UpstreamTokenError) and error.code == "upstream-auth-unavailable"
        assert elsewhere.count("token") == 0 and idp.count("token") == 1


def test_a_proxy_and_a_target_of_one_name_keep_their_secrets_apart():
    """A caller credential's HMAC key must never be sent to a token endpoint as a client secret."""
    from rr_addon.policy import schema
    from rr_addon.core.snapshot import compile_snapshot
    from rr_addon.identity.service import Identities

    cfg = schema.Config.model_validate({
        "targets": [{"name": "api", "hosts": ["api.example"], "credentials": [
            {"name": "x", "kind": "oauth2_client_credentials", "token_url": "https://idp.example/token", "client_id": "rr"}]}],
        "proxies": [{"name": "api", "targets": [{"target": "api"}], "credentials": [
            {"name": "x", "auth": "jwt_verify", "issuer": "i", "audience": "a", "algorithms": ["HS256"]}]}],
    })  # fmt: skip
    hmac_key = "HMAC-KEY-" + "k" * 32
    snap = compile_snapshot(cfg, version=1, hmac_key=b"k" * 32, target_secrets={("api", "x"): "CLIENT-SECRET"}, caller_digests={}, caller_secrets={("api", "x"): hmac_key})
    identities = Identities()
    identities.rebuild(snap)
    assert identities.sources[("api", "x")].client.secret == "CLIENT-SECRET"
    assert {(v.proxy, v.name): v.secret for v in snap.verifiers}[("api", "x")] == hmac_key


def test_a_rotation_answered_with_an_unusable_access_token_keeps_the_new_refresh_token(idp):
    """The IdP retired the old refresh token when it answered 200: spending it again would
    be reuse (many IdPs then revoke the whole family), so the rotated one is kept."""
    store = MemoryRefreshTokens()
    clock = Clock()
    seed = idp.refresh_token("rr")
    idp.token_type = "mac"

    async def body(http):
        src = source(idp, http, clock, refresh_fields(idp), {"refresh_token": seed, "client_secret": "rr-client-secret"}, store=store)
        first = await fetch(src)
        idp.token_type = "Bearer"
        clock.advance(3)  # past the failure back-off
        return first, await fetch(src)

    first, second = run(body)
    assert isinstance(first, UpstreamTokenError) and first.detail == "token_type is not Bearer"
    assert isinstance(second, str), second
    assert idp.reuses == 0 and idp.refusals == []


def test_a_lease_the_store_could_not_end_never_sends_an_empty_refresh_token(idp):
    """An IdP that does not rotate, and the database down while rr ends its lease:
    nothing new is kept, and the next refresh spends the same refresh token again."""
    idp.rotate_refresh_tokens = False
    clock, store = Clock(), FlakyStore()
    seed = idp.refresh_token("rr")

    async def body(http):
        src = source(idp, http, clock, refresh_fields(idp), {"refresh_token": seed, "client_secret": "rr-client-secret"}, store=store)
        await src.token()
        original = store.release

        async def failing_release(key):
            raise ConnectionError("database down")

        store.release = failing_release
        clock.advance(91)
        second = await fetch(src)
        store.release = original
        clock.advance(91)
        return second, await fetch(src)

    second, third = run(body)
    assert isinstance(second, str) and isinstance(third, str), (second, third)
    assert [f["refresh_token"] for e, f in idp.received if e == "token"] == [seed] * 3
    assert idp.refusals == []
