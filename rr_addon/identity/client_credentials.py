"""Upstream OAuth tokens for an `oauth2_client_credentials` target credential
(RFC 6749 §4.4): an `UpstreamToken` with the client-credentials grant. The
cache, single-flight refresh and failure handling are in
rr_addon.identity.upstream_token."""

from __future__ import annotations

import time
from typing import Callable

from rr_addon.identity import Http
from rr_addon.identity.client_auth import ClientAuth
from rr_addon.identity.grants import ClientCredentialsGrant
from rr_addon.identity.upstream_token import MAX_TTL, UpstreamToken, UpstreamTokenError

__all__ = ["MAX_TTL", "ClientCredentialsToken", "UpstreamTokenError"]


class ClientCredentialsToken(UpstreamToken):
    """The client-credentials token of a client that authenticates with a secret."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: Http,
        scope: str | None = None,
        audience: str | None = None,
        client_auth: str = "basic",
        refresh_skew: float = 60.0,
        default_ttl: float = 300.0,
        failure_backoff: float = 2.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if client_auth not in ("basic", "post"):
            raise ValueError("client_auth is 'basic' or 'post'")
        super().__init__(
            token_url,
            ClientCredentialsGrant(),
            ClientAuth(client_auth, client_id, secret=client_secret),
            http=http,
            scope=scope,
            audience=audience,
            refresh_skew=refresh_skew,
            default_ttl=default_ttl,
            failure_backoff=failure_backoff,
            timeout=timeout,
            clock=clock,
        )
        self.client_id = client_id
