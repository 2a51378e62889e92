"""Target credentials for the upstream OAuth grants beyond client credentials
(docs/policy.md):

  oauth2_refresh_token  a stored `refresh_token` exchanged for access tokens
                        (RFC 6749 §6); rotated refresh tokens are kept
  oauth2_jwt_bearer     an assertion signed with a private key (RFC 7523):
                        a Google `service_account` key file, or explicit
                        `issuer`/`subject`/`private_key`/`key_id`

Both may hold more than one secret (the refresh token or key, and the
client's own secret or key). They are stored together, encrypted, as one JSON
object (`SecretBundle`); an apply gives all of them or none (none keeps the
stored ones).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, model_validator

from rr_addon.policy.base import FileSecret, SecretRef
from rr_addon.policy.credential_base import TargetCredentialBase
from rr_addon.policy.identity_schema import _TokenEndpoint

SigningAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
BUNDLE = "bundle:"  # prefix of a bundle's source label


@dataclass(frozen=True)
class SecretBundle:
    """Several secret references of one credential, resolved into one JSON object."""

    refs: tuple[tuple[str, Any], ...]  # (field, SecretRef)

    def resolve(self, base: Path, env: Mapping[str, str], resolve_one, label_one) -> tuple[str, str]:
        """(the JSON object of values, a source label). Raises ValueError naming the field."""
        values, labels = {}, []
        for name, ref in self.refs:
            try:
                values[name] = resolve_one(ref, base, env)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            labels.append(f"{name}={label_one(ref)}")
        return json.dumps(values, sort_keys=True), BUNDLE + ",".join(labels)


def read_bundle(secret: str, *fields: str) -> dict[str, str]:
    """The stored values of a bundle. Raises ValueError naming a missing field."""
    try:
        doc = json.loads(secret)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ValueError("the stored secrets are not in the form this kind needs: give them again")
    missing = [f for f in fields if not isinstance(doc.get(f), str) or not doc[f]]
    if missing:
        raise ValueError(f"no stored {', '.join(missing)}: give the credential's secrets again")
    return doc


class _Bundled(_TokenEndpoint, TargetCredentialBase):
    def _bundle(self, fields: tuple[str, ...]) -> SecretBundle | None:
        given = [f for f in fields if getattr(self, f) is not None]
        if not given:
            return None  # keep the stored ones
        missing = [f for f in fields if f not in given]
        if missing:
            raise ValueError(
                f"give all of {', '.join(fields)} or none of them (none keeps the stored ones); missing: {', '.join(missing)}"
            )
        for f in given:
            ref = getattr(self, f)
            if isinstance(ref, FileSecret) and ref.watch:
                raise ValueError(f"{f}: `watch: true` is not supported for a {self.kind} credential; run `rr apply` to change it")
        return SecretBundle(tuple((f, getattr(self, f)) for f in fields))

    def bundle_fields(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def secret_ref(self) -> SecretBundle | None:
        return self._bundle(self.bundle_fields())


class OAuth2RefreshToken(_Bundled):
    """An upstream OAuth access token obtained with a stored refresh token and
    sent as `Authorization: Bearer <token>`. A refresh token the IdP rotates is
    kept, encrypted, in the configuration database for every data plane."""

    kind: Literal["oauth2_refresh_token"]
    client_id: str = Field(min_length=1)  # public clients send it too (RFC 6749 §6)
    refresh_token: SecretRef | None = Field(None, repr=False)

    @model_validator(mode="after")
    def _checks(self) -> OAuth2RefreshToken:
        self._check_client()
        self._bundle(self.bundle_fields())  # all or none, no watch
        return self

    def bundle_fields(self) -> tuple[str, ...]:
        extra = self.client_secret_field
        return ("refresh_token",) + ((extra,) if extra else ())


class OAuth2JwtBearer(_Bundled):
    """An upstream OAuth access token obtained with a JWT assertion signed by a
    private key (RFC 7523), sent as `Authorization: Bearer <token>`."""

    kind: Literal["oauth2_jwt_bearer"]
    service_account: SecretRef | None = Field(None, repr=False)  # a Google service-account key file (JSON)
    issuer: str | None = Field(None, min_length=1)  # explicit assertions: iss
    subject: str | None = Field(None, min_length=1)  # sub; default: the issuer (or the service account's client_email)
    private_key: SecretRef | None = Field(None, repr=False)  # explicit assertions: PEM private key
    key_id: str | None = Field(None, min_length=1)  # explicit assertions: kid
    algorithm: SigningAlgorithm | None = None  # default: from the key (RS256, ES256, …)
    assertion_audience: str | None = Field(None, min_length=1)  # aud of the assertion; default: token_url
    client_auth: Literal["basic", "post", "private_key_jwt", "none"] = "none"

    @model_validator(mode="after")
    def _checks(self) -> OAuth2JwtBearer:
        self._check_client()
        if self.issuer is None:
            if self.private_key is not None or self.key_id is not None:
                raise ValueError("'private_key' and 'key_id' go with an explicit 'issuer'; a service account carries its own")
        elif self.service_account is not None:
            raise ValueError("give 'service_account' (a Google key file) or 'issuer' with 'private_key', not both")
        if self.issuer is None and self.algorithm not in (None, "RS256"):
            raise ValueError("a service account signs with RS256")
        self._bundle(self.bundle_fields())
        return self

    @property
    def uses_service_account(self) -> bool:
        return self.issuer is None

    def bundle_fields(self) -> tuple[str, ...]:
        extra = self.client_secret_field
        return ("service_account" if self.uses_service_account else "private_key",) + ((extra,) if extra else ())


OAUTH_GRANT_CREDENTIALS = (OAuth2RefreshToken, OAuth2JwtBearer)
