"""Verified identities and upstream OAuth tokens on the request path.

Built from each configuration snapshot: the token verifiers of `jwt_verify` /
`oauth2` proxy credentials (indexed by issuer and audience) and the token
sources of OAuth target credentials (client credentials, refresh token, JWT bearer). Caches (JWKS,
introspection answers, upstream tokens) are shared across reloads. A cache hit
answers without awaiting; a miss awaits one shared fetch — never blocking the
event loop.

Fetches are isolated by purpose and endpoint (`identity.Http` lanes), every
fetch has a whole-request deadline, and introspections of unknown tokens are
capped overall and per client address (`identity.gate`). Endpoint failures
count in `rr_backend_errors_total{backend="idp"}`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from rr_addon import metrics
from rr_addon.core.inject import Injection
from rr_addon.core.snapshot import Caller, Snapshot
from rr_addon.identity import Http, Refused, Shared, Verified, introspection, jwt_verify, token_key, upstream_sources
from rr_addon.identity.grants import RefreshTokenStore
from rr_addon.identity.upstream_token import UpstreamToken, UpstreamTokenError
from rr_addon.identity.gate import CLIENT, Gate
from rr_addon.identity.matching import Candidate, CredentialIndex, identify, identify_cached, prewarm, spec_for

logger = logging.getLogger("rr.identity")

__all__ = ["Identities", "UpstreamTokenError"]

OAUTH_KINDS = frozenset({"oauth2_client_credentials", "oauth2_refresh_token", "oauth2_jwt_bearer"})


class Identities:
    def __init__(self, ca_file: str | None = None, gate: Gate | None = None, refresh_tokens: RefreshTokenStore | None = None) -> None:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self.http = Http(verify=verify, on_failure=_count_failure)
        self.shared = Shared()
        self.gate = gate or Gate()
        self.index: CredentialIndex[Caller] | None = None
        self.sources: dict[tuple[str, str], UpstreamToken] = {}
        self.refresh_tokens = refresh_tokens  # where rotated refresh tokens are kept (None: in this process only)
        self._prewarm: asyncio.Task | None = None

    def rebuild(self, snap: Snapshot) -> None:
        """Verifiers and token sources for `snap`. Raises ValueError on a credential
        that cannot be built (the caller keeps the previous configuration)."""
        entries: list[Candidate[Caller]] = []
        sources: dict[tuple[str, str], UpstreamToken] = {}
        for v in snap.verifiers:
            c = v.settings
            try:
                if c.auth == "jwt_verify":
                    verifier: Any = jwt_verify.build(c, secret=v.secret, http=self.http, shared=self.shared)
                else:
                    verifier = introspection.build(c, client_secret=v.secret, http=self.http, shared=self.shared, gate=self.gate)
            except ValueError as e:
                raise ValueError(f"proxies[{v.proxy}].credentials[{v.name}]: {e}") from None
            entries.append(Candidate(spec_for(v.proxy, c), verifier, snap.proxies[v.proxy].callers[v.name]))
        for t in snap.token_sources:
            try:
                sources[(t.target, t.name)] = upstream_sources.build(
                    t.target, t.settings, t.secret, http=self.http, shared=self.shared, refresh_tokens=self.refresh_tokens
                )
            except ValueError as e:
                raise ValueError(f"targets[{t.target}].credentials[{t.name}]: {e}") from None
        # rr's own upstream secrets: a caller who presents one (an API key meant for
        # the upstream) must not have it handed to the introspection endpoint
        upstream = frozenset(token_key(v) for t in snap.targets.values() for c in t.credentials.values() for v in c.injection.secrets)
        upstream |= {token_key(v) for source in sources.values() for v in source.secrets()}  # client secrets, refresh tokens
        self.index = CredentialIndex(entries, never_introspect=upstream) if entries else None
        self.sources = sources
        self.shared.sweep()
        if self.index is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # at start-up, before the loop: `running()` prewarms
            self._prewarm = loop.create_task(self.prewarm())

    async def prewarm(self) -> None:
        if self.index is not None and not await prewarm(self.index):
            logger.warning("rr: some token signing keys could not be fetched yet; retried on first use")

    async def identify(self, token: str, client: str | None = None) -> tuple[Caller, Verified] | Refused:
        """`client`: the caller's address, for the per-client introspection cap."""
        assert self.index is not None
        result = identify_cached(self.index, token)
        if result is None:
            reset = CLIENT.set(client)
            try:
                result = await identify(self.index, token)
            finally:
                CLIENT.reset(reset)
        if isinstance(result, Refused):
            return result
        candidate, verified = result
        return candidate.value, verified

    async def upstream_injection(self, target: str, credential: str) -> Injection:
        """Authorization for this request from the credential's OAuth token (raises UpstreamTokenError)."""
        source = self.sources[(target, credential)]
        token = source.token_nowait() or await source.token()
        return source.injection(target, credential, token)

    async def close(self) -> None:
        if self._prewarm is not None:
            self._prewarm.cancel()
        await self.http.aclose()


def _count_failure(purpose: str) -> None:
    metrics.backend_error("idp", purpose)
