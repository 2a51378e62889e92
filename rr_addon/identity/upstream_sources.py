"""Build the `UpstreamToken` of an OAuth target credential from its
configuration and stored secret(s). Raises ValueError, naming the field, on
a key or service-account file that cannot be used: `rr apply` refuses it.

Sources are shared across reloads (identity.Shared), keyed by everything that
defines them — a digest of the secrets included — so a new configuration keeps
the current token, and a changed secret builds a new source.
"""

from __future__ import annotations

from typing import Any

from rr_addon.config.diff import SECRET_FIELDS
from rr_addon.policy.oauth_grants_schema import read_bundle
from rr_addon.identity import Http, Shared, secret_digest
from rr_addon.identity.client_auth import ClientAuth, load_signing_key
from rr_addon.identity.grants import (
    ClientCredentialsGrant,
    JwtBearerGrant,
    MemoryRefreshTokens,
    RefreshTokenGrant,
    RefreshTokenStore,
    parse_service_account,
)
from rr_addon.identity.upstream_token import UpstreamToken

LEASE_MARGIN = 5.0  # seconds a refresh-token lease outlives the token request it covers

_SECRET_FIELDS = set(SECRET_FIELDS)


def build(
    target: str,
    cred: Any,
    secret: str,
    *,
    http: Http,
    shared: Shared | None = None,
    refresh_tokens: RefreshTokenStore | None = None,
) -> UpstreamToken:
    """The token source of an oauth2_client_credentials, oauth2_refresh_token or
    oauth2_jwt_bearer target credential."""
    settings = cred.model_dump_json(exclude=_SECRET_FIELDS | {"rules", "filters", "redact", "description", "default_effect"})
    key = (target, cred.name, settings, secret_digest(secret), id(refresh_tokens))

    def make() -> UpstreamToken:
        return _make(target, cred, secret, http, refresh_tokens or MemoryRefreshTokens())

    return make() if shared is None else shared.obtain(key, make)


def _client(cred: Any, values: dict[str, str]) -> ClientAuth:
    field = cred.client_secret_field
    value = values.get(field) if field else None
    if cred.client_auth == "private_key_jwt":
        return ClientAuth("private_key_jwt", cred.client_id, key=load_signing_key(value or "", key_id=cred.client_key_id, what="client_key"))
    return ClientAuth(cred.client_auth, cred.client_id, secret=value)


def _make(target: str, cred: Any, secret: str, http: Http, refresh_tokens: RefreshTokenStore) -> UpstreamToken:
    label = f"{target}/{cred.name}"
    common = dict(
        http=http,
        scope=cred.scope,
        audience=cred.audience,
        resource=cred.resource,
        refresh_skew=cred.refresh_skew,
        timeout=cred.timeout,
        label=label,
    )
    if cred.kind == "oauth2_client_credentials":
        values = {cred.client_secret_field: secret}
        return UpstreamToken(cred.token_url, ClientCredentialsGrant(), _client(cred, values), **common)
    fields = cred.bundle_fields()
    values = read_bundle(secret, *fields)
    if cred.kind == "oauth2_refresh_token":
        wait = cred.timeout + LEASE_MARGIN
        grant: Any = RefreshTokenGrant((target, cred.name), values["refresh_token"], refresh_tokens, lease_seconds=wait, wait=wait)
        return UpstreamToken(cred.token_url, grant, _client(cred, values), **common)
    if cred.kind == "oauth2_jwt_bearer":
        audience = cred.assertion_audience or cred.token_url
        if cred.uses_service_account:
            account = parse_service_account(values["service_account"])
            if account.token_uri is not None and account.token_uri != cred.token_url:
                raise ValueError(
                    f"the service account's token_uri {account.token_uri!r} is not token_url {cred.token_url!r}: "
                    "rr sends assertions only to the token_url of the configuration; make them the same"
                )
            # Google takes the scopes as a claim of the assertion, not a form field
            grant = JwtBearerGrant(account.private_key, issuer=account.client_email, subject=cred.subject or account.client_email, audience=audience, scope_claim=cred.scope)
            common["scope"] = None
        else:
            key = load_signing_key(values["private_key"], algorithm=cred.algorithm, key_id=cred.key_id, what="private_key")
            grant = JwtBearerGrant(key, issuer=cred.issuer, subject=cred.subject or cred.issuer, audience=audience)
        return UpstreamToken(cred.token_url, grant, _client(cred, values), **common)
    raise ValueError(f"{cred.kind} is not an OAuth grant")
