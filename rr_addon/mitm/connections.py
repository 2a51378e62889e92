"""Connection guards: per-address limits, the tunnel's credential, and where upstream
connections may go (only where a decided request asked, to globally routable
addresses unless the target allows private ones, pinned to the checked address).

A connection to the upstream opens after rr decided a request (rr forces
`connection_strategy=lazy`); `allow` records which destinations the decided
requests of a client connection may reach, and `server_connect` refuses the
rest. A refusal here is answered in the `error` hook with the Decision kept in
`ClientState.refusals`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from mitmproxy import ctx, http
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.mode_specs import RegularMode

from rr_addon.core import reasons
from rr_addon.core.addresses import is_global_address
from rr_addon.core.types import Decision

logger = logging.getLogger("rr")


@dataclass(slots=True, eq=False)
class ClientState:
    """What rr remembers about one client connection."""

    tunnel_authorization: tuple[str, ...] = ()
    tunnel: bool = False  # a CONNECT opened a tunnel on this connection
    # (host, port) -> whether connections it opens may reach private addresses
    connect_policy: dict[tuple[str, int], bool] = field(default_factory=dict)
    refusals: dict[tuple[str, int], Decision] = field(default_factory=dict)


class ConnectionGuard:
    def __init__(self) -> None:
        self.clients: dict[str, ClientState] = {}
        self.per_address: dict[str | None, int] = {}  # open client connections per client address
        self.pinned: dict[str, tuple[str, int]] = {}  # server connection id -> the address it was asked for

    # ------------------------------------------------------------------ client connections

    def client_connected(self, client: Any, limit: int) -> None:
        address = client.peername[0] if client.peername else None
        if limit and self.per_address.get(address, 0) >= limit:
            logger.warning("rr closes a connection from %s: it already holds %d", address, limit)
            client.error = "rr: too many connections from this address"
            return
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.clients[client.id] = ClientState()

    def client_disconnected(self, client: Any) -> None:
        if self.clients.pop(client.id, None) is not None:
            address = client.peername[0] if client.peername else None
            left = self.per_address.get(address, 1) - 1
            if left > 0:
                self.per_address[address] = left
            else:
                self.per_address.pop(address, None)

    def client(self, client_id: str) -> ClientState:
        state = self.clients.get(client_id)
        if state is None:
            state = self.clients[client_id] = ClientState()
        return state

    def tunnel(self, flow: http.HTTPFlow, connect_ports: frozenset[int] | None, challenge: bool) -> Decision | None:
        """A CONNECT: keep its credential for the tunnel, off the flow; the refusal, if any."""
        values = tuple(flow.request.headers.get_all("proxy-authorization"))
        if values:
            del flow.request.headers["proxy-authorization"]
        state = self.client(flow.client_conn.id)
        state.tunnel_authorization, state.tunnel = values, True
        if connect_ports is not None and flow.request.port not in connect_ports:
            where = f"{flow.request.host}:{flow.request.port}"
            return Decision.deny("unknown-target", reasons.CONNECT_PORT_NOT_ALLOWED, detail=f"{where}; check the URL's port")
        if not values and challenge:
            return dataclasses.replace(Decision.deny("unauthenticated", reasons.PROXY_AUTH_CHALLENGE), status=407)
        return None

    def proxied_plain_http(self, flow: http.HTTPFlow, client: ClientState | None) -> bool:
        """A request sent to rr as an HTTP proxy (absolute-form), not one inside a CONNECT tunnel."""
        return client is not None and not client.tunnel and not flow.client_conn.tls and isinstance(flow.client_conn.proxy_mode, RegularMode)

    def allow(self, flow: http.HTTPFlow, allow_private: bool) -> None:
        """A decided request may open a connection to its destination (private addresses only if every request there allows it)."""
        state = self.client(flow.client_conn.id)
        key = (flow.request.host, flow.request.port)
        state.connect_policy[key] = state.connect_policy.get(key, True) and allow_private

    def refusal(self, flow: http.HTTPFlow) -> Decision | None:
        """Why the connection of this flow was refused or abandoned, once."""
        state = self.clients.get(flow.client_conn.id)
        return state.refusals.pop((flow.request.host, flow.request.port), None) if state else None

    # ------------------------------------------------------------------ server connections

    async def server_connect(self, data: server_hooks.ServerConnectionHookData, connect_timeout: int, abandon: Callable[[str, Any], None]) -> None:
        """Refuse connections no governed request asked for, and (unless the
        target allows it) any whose host does not resolve or resolves to an
        address that is not globally routable; connect to the checked address
        only (no DNS rebinding in between), with the target host as TLS SNI."""
        server = data.server
        try:
            if server.via is not None or server.address is None:
                return
            state = self.clients.get(data.client.id)
            host, port = server.address[0], server.address[1]
            allow_private = state.connect_policy.get((host, port)) if state else None
            if allow_private is None:
                server.error = "rr refused: no governed request for this destination"
                return
            if connect_timeout > 0:
                asyncio.get_running_loop().call_later(connect_timeout, abandon, data.client.id, server)
            if server.tls:
                server.sni = host  # never the caller's SNI: the certificate is checked against the target
            if allow_private:
                return
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as e:
                infos, failure = [], str(e)
            else:
                failure = "no addresses"
            addresses = [info[4][0] for info in infos]
            if not addresses:
                logger.warning("rr refuses a connection to %s: lookup failed (%s)", host, failure)
                state.refusals[(host, port)] = Decision.deny("upstream-unavailable", reasons.LOOKUP_FAILED, detail=host)
                server.error = f"rr refused: {host} could not be resolved"
                return
            bad = next((a for a in addresses if not is_global_address(a)), None)
            if bad is not None:
                # the address goes to rr's log, never to the caller (it would map internal DNS)
                logger.warning("rr refuses a connection to %s: it resolves to %s, which is not globally routable", host, bad)
                state.refusals[(host, port)] = Decision.deny(
                    "access-denied", reasons.PRIVATE_ADDRESS, scope="target", rule="allow_private_addresses", detail=host
                )
                server.error = f"rr refused: {host} resolves to a private address"
                return
            self.pinned[server.id] = server.address
            server.address = (addresses[0], port)
        except Exception:
            logger.exception("rr internal error in server_connect; refusing the connection")
            server.error = "rr internal error"

    def connect_deadline(self, client_id: str, server: Any) -> None:
        """rr_connect_timeout passed: a connection still without its TCP (and TLS) set-up is abandoned."""
        if server.timestamp_end is not None or (server.timestamp_tls_setup if server.tls else server.timestamp_tcp_setup):
            return
        proxy = ctx.master.addons.get("proxyserver")
        handler = proxy.connections.get(client_id) if proxy is not None else None
        io = handler.transports.get(server) if handler is not None else None
        if io is not None and io.handler is not None:
            host, port = self.pinned.get(server.id, server.address)[:2]
            detail = f"connect timeout: rr_connect_timeout is {ctx.options.rr_connect_timeout} s"
            logger.info("rr abandons the connection to %s:%s: %s", host, port, detail)
            state = self.clients.get(client_id)
            if state is not None:  # the flows waiting for it are answered with this (see `error`)
                state.refusals[(host, port)] = Decision.deny("upstream-timeout", reasons.UPSTREAM_TIMEOUT, detail=detail)
            io.handler.cancel(f"rr: upstream {detail}")

    def unpin(self, server: Any) -> None:
        """The connection is open (or failed): it shows the address it was asked for again."""
        original = self.pinned.pop(server.id, None)
        if original is not None:
            server.address = original
