"""A cap on concurrent introspections of tokens rr has no answer for.

Every unknown bearer token costs a request to the introspection endpoint, so
junk tokens are a cheap way to load it (and, before the fetch lanes were
split, to starve JWKS refreshes). The gate admits at most `total` such
introspections in flight, and at most `per_client` started on behalf of one
client address; beyond that the request is refused at once (401
`unauthenticated`, INTROSPECTION_BUSY) instead of queueing. A request that
carries a token already being introspected joins that request and needs no
slot. The client address travels in a context variable set by
`rr_addon.identity.service`, so the verifier interfaces stay token-only.
"""

from __future__ import annotations

import contextvars

CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("rr_identity_client", default=None)

DEFAULT_TOTAL = 16
DEFAULT_PER_CLIENT = 4


class Gate:
    def __init__(self, total: int = DEFAULT_TOTAL, per_client: int = DEFAULT_PER_CLIENT) -> None:
        self.total, self.per_client = total, per_client
        self.in_flight = 0
        self.refused = 0  # for tests and metrics
        self._by_client: dict[str | None, int] = {}

    def enter(self, client: str | None) -> bool:
        held = self._by_client.get(client, 0)
        if self.in_flight >= self.total or held >= self.per_client:
            self.refused += 1
            return False
        self.in_flight += 1
        self._by_client[client] = held + 1
        return True

    def leave(self, client: str | None) -> None:
        self.in_flight -= 1
        held = self._by_client[client] - 1
        if held:
            self._by_client[client] = held
        else:
            del self._by_client[client]  # bounded by addresses with work in flight
