"""What a target credential adds to a request.

An Injection lists header and query values twice: the real (wire) value,
which only ever reaches the upstream connection, and the shown value with a
placeholder naming the credential, which is what the flow — and therefore
mitmweb, `-w` dumps and logs — carries.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from rr_addon.policy import schema
from rr_addon.policy.scrub import replacement_pairs


def placeholder(target: str, credential: str) -> str:
    return f"[rr:{target}/{credential}]"


@dataclass(frozen=True, slots=True)
class Injection:
    label: str  # "target/credential"
    headers: tuple[tuple[str, str, str], ...] = ()  # (name, wire value, shown value)
    query: tuple[tuple[str, str, str], ...] = ()  # (name, wire value, shown value)
    secrets: tuple[str, ...] = ()  # every value derived from the secret, for scrubbing echoes
    dynamic: bool = False  # the value is obtained per request (an OAuth token): see rr_addon.identity.service
    scrub: tuple[tuple[bytes, bytes], ...] = field(default=(), compare=False)  # (secret, placeholder) byte pairs

    def __post_init__(self) -> None:
        # percent-encoded (and JSON- or HTML-escaped) echoes are spellings the scrubber matches itself
        object.__setattr__(self, "scrub", replacement_pairs(self.secrets, placeholder(*self.label.split("/", 1))))

    @property
    def empty(self) -> bool:
        return not self.headers and not self.query and not self.dynamic


def build_injection(target: str, cred: schema.TargetCredentialBase, secret: str | None) -> Injection:
    label = f"{target}/{cred.name}"
    ph = placeholder(target, cred.name)
    if isinstance(cred, schema.NoneCredential):
        return Injection(label)
    assert secret is not None, f"{label}: no secret"
    if isinstance(cred, schema.ApiKeyCredential):
        if cred.header is not None:
            return Injection(label, headers=((cred.header, secret, ph),), secrets=(secret,))
        assert cred.query is not None
        return Injection(label, query=((cred.query, secret, ph),), secrets=(secret,))
    if isinstance(cred, schema.BearerCredential):
        return Injection(label, headers=(("Authorization", f"Bearer {secret}", f"Bearer {ph}"),), secrets=(secret,))
    if isinstance(cred, schema.BasicCredential):
        token = base64.b64encode(f"{cred.username}:{secret}".encode()).decode()
        return Injection(label, headers=(("Authorization", f"Basic {token}", f"Basic {ph}"),), secrets=(secret, token))
    if isinstance(cred, schema.JwtCredential):
        return Injection(label, headers=((cred.header, cred.prefix + secret, cred.prefix + ph),), secrets=(secret,))
    if isinstance(cred, (schema.OAuth2ClientCredentials, schema.OAuth2RefreshToken, schema.OAuth2JwtBearer)):
        return Injection(label, dynamic=True)
    if isinstance(cred, schema.CustomCredential):
        headers = tuple((n, t.format(secret=secret), t.format(secret=ph)) for n, t in cred.headers.items())
        query = tuple((n, t.format(secret=secret), t.format(secret=ph)) for n, t in cred.query.items())
        return Injection(label, headers=headers, query=query, secrets=(secret,))
    raise AssertionError(f"unhandled credential kind {type(cred).__name__}")
