"""rr as a mitmproxy addon: `mitmdump -s rr_addon/addon.py` or `rr run`.

The glue is thin: options in `load()`, the configuration snapshot built in
`configure()` and swapped by a background watcher, hooks that turn flows
into `RequestFacts`, ask `decide()`, and turn the Outcome into a response or
an injection. Any exception inside rr answers 500 and forwards nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import os
import socket
import time
from pathlib import Path

from collections.abc import Sequence

from mitmproxy import command, contentviews, ctx, exceptions, flow, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.mode_specs import RegularMode

from rr_addon import approvals, audit, flows, metrics, rotation, settings, timeouts, webview, wire
from rr_addon.rotation import SecretWatcher
from rr_addon.identities import Identities, UpstreamTokenError
from rr_addon.identity import Refused
from rr_addon.metering import Metering
from rr_addon.meters import BackendUnavailable, open_backend
from rr_addon.core import reasons
from rr_addon.core.addresses import is_global_address
from rr_addon.core.bodies import BodyError, DecodedTooLarge, decodable, decode_content, dump_json, is_json_content_type, media_type, parse_json
from rr_addon.core.callers import Problem, find_presented
from rr_addon.core.decide import Admission, Limits, admit, admit_verified, authorize, quota_outcome, too_large
from rr_addon.core.meters import NOT_JSON, STREAM_BROKEN, TOO_LARGE, UNCOUNTED, EventMeasure, Measurement
from rr_addon.core.recode import Recoder, recodable
from rr_addon.core.responses import BODY_TOO_LARGE, EMPTY, BodyCollector, BodyCopy, process_response
from rr_addon.core.scrub import StreamScrubber, scrub_bytes
from rr_addon.core.snapshot import Snapshot
from rr_addon.core.terminal import escape_log_output
from rr_addon.core.types import Decision, Outcome
from rr_addon.crypto import Keyring, MasterKeyError, master_keys
from rr_addon.store import audit_store, config_store, dataplanes, notify
from rr_addon.store.db import DatabaseError, check_schema, make_engine

logger = logging.getLogger("rr")

STREAM_REQUESTS_OVER = 1024 * 1024  # bytes; larger request bodies that no rule reads are streamed

_AUDITED = "_rr_audited"
_STARTED = "_rr_started"
_PENDING = "_rr_pending"  # (Admission, RequestFacts) waiting for the body
_METERED = "_rr_metered"  # (meters Plan, Verdict) of an admitted request
_PIPELINE = "_rr_pipeline"  # the response Pipeline of an admitted request
_WATCH = "_rr_watch"  # the timeouts.Watch of an admitted request
_TIMED_OUT = "_rr_timed_out"  # which timeout cut the exchange off
_HELD_FOR = "_rr_held_for"  # why a response is held back whole (the reason if it is too large)
_DECISION_TIME = "_rr_decision_time"  # seconds spent deciding (auth, target, rules, meters), body waits excluded
_VERIFICATION = "_rr_verification"  # audit summary of a token verification (subject, issuer, path)
_SEEN = "_rr_seen"  # wire.Stamp of the request as rr is deciding on it (an edit meanwhile refuses it)
_UNSCRUBBABLE = "_rr_unscrubbable"  # the Decision refusing a response rr cannot scrub (its body is never read)


class _StreamingIsRoutine(logging.Filter):
    """rr streams every response it need not filter: mitmproxy's per-flow
    "Streaming response from …" INFO line becomes DEBUG (printing it cost ~5 %)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and isinstance(record.msg, str) and record.msg.startswith(("Streaming response from", "Streaming request to")):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_STREAMING_FILTER = _StreamingIsRoutine()


class ClientState:
    """What rr remembers about one client connection. (A plain class: mitmproxy
    loads this file as a script module, where dataclasses cannot resolve it.)"""

    __slots__ = ("tunnel_authorization", "tunnel", "connect_policy", "refusals")

    def __init__(self) -> None:
        self.tunnel_authorization: tuple[str, ...] = ()
        self.tunnel = False  # a CONNECT opened a tunnel on this connection
        # (host, port) -> whether connections it opens may reach private addresses
        self.connect_policy: dict[tuple[str, int], bool] = {}
        self.refusals: dict[tuple[str, int], Decision] = {}


def fail_closed(hook):
    """Any exception in a flow hook answers 500 internal-error and forwards nothing."""

    def failed(self: RR, flow: http.HTTPFlow) -> None:
        logger.exception("rr internal error in %s hook, request %s; answering 500", hook.__name__, flow.id)
        self.fail(flow, final=hook.__name__ in ("response", "error"))

    if inspect.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def async_wrapper(self: RR, flow: http.HTTPFlow):
            try:
                return await hook(self, flow)
            except Exception:
                failed(self, flow)

        return async_wrapper

    @functools.wraps(hook)
    def wrapper(self: RR, flow: http.HTTPFlow):
        try:
            return hook(self, flow)
        except Exception:
            failed(self, flow)

    return wrapper


class RR:
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.clients: dict[str, ClientState] = {}
        self.limits = Limits()
        self.per_address: dict[str | None, int] = {}  # open client connections per client address
        self._engine = None
        self._keyring: Keyring | None = None
        self._watcher: asyncio.Task | None = None
        self._rotator: asyncio.Task | None = None
        self.secrets = SecretWatcher()  # target secrets this data plane reads itself
        self._stored = None  # the Stored the snapshot was compiled from (recompiled on rotation)
        self._swap = asyncio.Lock()  # one snapshot rebuild at a time (reload or rotation)
        self._failed_version: int | None = None
        self._pinned: dict[str, tuple[str, int]] = {}
        self.audit: audit.AuditWriter | None = None
        self.audit_db: audit_store.DatabaseSink | None = None
        self.plane_id = dataplanes.new_id()
        self.requests = 0
        self._changes: notify.ConfigChangeListener | None = None
        self._heartbeat: dataplanes.Heartbeat | None = None
        self._exporter: metrics.Exporter | None = None
        self.metering: Metering | None = None
        self.identities: Identities | None = None
        self.approvals = approvals.Approvals()  # requests held for a person's decision
        self._lazy = False  # connection_strategy is lazy from the first configure on
        self._running = False  # from then on, FROZEN_OPTIONS and rr's own options cannot change

    # ------------------------------------------------------------------ lifecycle

    def load(self, loader: Loader) -> None:
        escape_log_output()  # request lines and errors carry caller bytes: no terminal control sequences
        contentviews.add(webview.RRView(self.explain_flow))
        server_log = logging.getLogger("mitmproxy.proxy.server")
        if not any(isinstance(f, _StreamingIsRoutine) for f in server_log.filters):
            server_log.addFilter(_STREAMING_FILTER)
        loader.add_option(
            "rr_database_url", str, "", "rr database URL (default: $RR_DATABASE_URL, else sqlite:///$RR_HOME/rr.db)."
        )
        loader.add_option(
            "rr_redis_url", str, "", "Redis URL for meter counters shared by every rr process (default: $RR_REDIS_URL; none: embedded counters)."
        )
        loader.add_option(
            "rr_reload_interval_ms", int, 1000, "Milliseconds between checks for a new rr configuration version (PostgreSQL also notifies at once)."
        )
        loader.add_option(
            "rr_idp_ca_file", str, "", "CA bundle (PEM) for identity providers (JWKS, introspection, token endpoints); default: the system's."
        )
        loader.add_option("rr_audit_file", str, "", "Append one JSON audit record per request to this file (JSON lines).")
        loader.add_option("rr_metrics_port", int, 0, "Serve Prometheus metrics on this port (0: off).")
        loader.add_option("rr_metrics_host", str, "127.0.0.1", "Address the Prometheus metrics are served on.")
        loader.add_option(
            "rr_max_client_connections",
            int,
            256,
            "Most simultaneous connections one client address may hold; more are closed at once (0: no limit).",
        )
        loader.add_option(
            "rr_connect_timeout",
            int,
            10,
            "Seconds to open an upstream connection (TCP and TLS); then 504 upstream-timeout (0: the system's limit).",
        )
        loader.add_option(
            "rr_first_byte_timeout",
            int,
            120,
            "Seconds an upstream may take, once the request is sent, to start its response; then 504 upstream-timeout (0: no limit).",
        )
        loader.add_option(
            "rr_idle_timeout",
            int,
            120,
            "Seconds without a byte in either direction while a request or response body streams; then rr cuts the "
            "exchange off (504 upstream-timeout if nothing reached the caller yet). A response that keeps moving is never cut (0: no limit).",
        )
        loader.add_option(
            "rr_upstream_timeout",
            int,
            -1,
            "Deprecated: was a deadline on the whole response. A value sets rr_first_byte_timeout and rr_idle_timeout (-1: unset).",
        )
        loader.add_option(
            "rr_buffer_limit",
            int,
            16 * 1024 * 1024,
            "Largest response body (bytes, after decoding) rr buffers to filter, redact or meter; larger is 502 response-too-large. "
            "Also the largest event of a text/event-stream a meter reads (larger: the response is unmeasured).",
        )
        loader.add_option(
            "rr_proxy_auth_challenge",
            bool,
            False,
            "Answer a CONNECT that carries no Proxy-Authorization (and a plain-http proxied request without any credential) "
            'with 407 and Proxy-Authenticate: Basic realm="rr", '
            "for clients that send proxy credentials only when challenged (Java, curl --proxy-anyauth, git's default "
            "proxyAuthMethod). Callers that cannot set proxy credentials (an rr key in Authorization or X-RR-Authorization "
            "inside the tunnel) then need a listener without it (docs/clients.md).",
        )
        loader.add_option(
            "rr_max_held_requests",
            int,
            20,
            "Most requests of one proxy this rr process holds for approval at once; more are answered 429 approval-capacity (0: no limit).",
        )
        loader.add_option(
            "rr_inspect_limit",
            int,
            1024 * 1024,
            "Largest request body (bytes) rr reads for body rules and for a form's _method field; a larger body is "
            "refused with 413 when body rules apply or it is an urlencoded form (or a POST without Content-Type).",
        )

    def configure(self, updated: set[str]) -> None:
        if self._running and (frozen := sorted(n for n in updated if n in FROZEN_OPTIONS or n.startswith("rr_"))):
            # mitmweb's options editor (anyone with the web password) or a script: refused and rolled back
            raise exceptions.OptionsError(f"rr: {', '.join(frozen)} cannot change while rr runs (they decide where secrets may go); restart rr to change them")
        if "proxy_debug" in updated and ctx.options.proxy_debug:
            raise exceptions.OptionsError("rr refuses proxy_debug: it logs the bytes sent upstream, injected secrets included")
        if "ssl_insecure" in updated and ctx.options.ssl_insecure:
            logger.warning("ssl_insecure is set: rr sends secrets to upstreams whose certificates it does not verify (a hostile DNS answer gets them)")
        if "rr_upstream_timeout" in updated and ctx.options.rr_upstream_timeout >= 0:
            old = ctx.options.rr_upstream_timeout
            logger.warning(
                "rr_upstream_timeout is deprecated (it cut off whole responses, even ones still streaming): "
                "rr sets rr_first_byte_timeout=%d and rr_idle_timeout=%d from it; set those (and rr_connect_timeout) instead",
                old,
                old,
            )
            ctx.options.update(rr_first_byte_timeout=old, rr_idle_timeout=old, rr_upstream_timeout=-1)
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # Eager connects upstream on CONNECT, before rr has decided anything.
            if self._lazy:  # changed at run time (mitmweb's options editor, `set`): refused and rolled back
                from rr_addon.runner import LAZY_ONLY

                raise exceptions.OptionsError(LAZY_ONLY)
            logger.info("rr sets connection_strategy=lazy: nothing connects upstream before a decision")
            ctx.options.update(connection_strategy="lazy")
        self._lazy = True
        if "rr_database_url" in updated:
            self._open_store(ctx.options.rr_database_url or None)
        if "rr_database_url" in updated or "rr_redis_url" in updated:
            self._open_counters(ctx.options.rr_redis_url or os.environ.get("RR_REDIS_URL") or None)
        if "rr_inspect_limit" in updated:
            self.limits = Limits(inspect_bytes=ctx.options.rr_inspect_limit)
        if "rr_audit_file" in updated or "rr_database_url" in updated or self.audit is None:
            self._open_audit(ctx.options.rr_audit_file)
        if "rr_metrics_port" in updated or "rr_metrics_host" in updated:
            if self._exporter is not None:
                self._exporter.close()
                self._exporter = None
            if ctx.options.rr_metrics_port:
                try:
                    self._exporter = metrics.serve(ctx.options.rr_metrics_port, ctx.options.rr_metrics_host)
                except OSError as e:
                    raise exceptions.OptionsError(f"rr: cannot serve metrics on {ctx.options.rr_metrics_host}:{ctx.options.rr_metrics_port}: {e}") from None

    def _open_store(self, url: str | None) -> None:
        try:
            engine = make_engine(url, existing=True)
            check_schema(engine)
            keyring = Keyring(master_keys(settings.home()))
            snapshot = self._load(engine, keyring)
            identities = Identities(ctx.options.rr_idp_ca_file or None)
            identities.rebuild(snapshot)
        except (DatabaseError, MasterKeyError, LookupError) as e:
            raise exceptions.OptionsError(f"rr: {e}") from None
        except Exception as e:
            raise exceptions.OptionsError(f"rr: cannot load the configuration: {e}") from None
        self._engine, self._keyring, self.snapshot, self.identities = engine, keyring, snapshot, identities
        metrics.config_loaded(snapshot.version)
        logger.info(
            "rr enforces configuration version %d (%d proxies, %d targets) from %s",
            snapshot.version,
            len(snapshot.proxies),
            len(snapshot.targets),
            settings.redacted_url(str(engine.url)),
        )

    def _open_counters(self, redis_url: str | None) -> None:
        old = self.metering
        try:
            backend = open_backend(redis_url=redis_url, engine=self._engine)
        except BackendUnavailable as e:
            raise exceptions.OptionsError(f"rr: meter counters unavailable: {e}") from None
        self.metering = Metering(backend)
        logger.info("rr counts meters in %s", "Redis " + settings.redacted_url(redis_url) if redis_url else "the embedded database")
        if old is not None:
            asyncio.get_event_loop().create_task(old.close())

    def _open_audit(self, path: str) -> None:
        old = self.audit
        sinks: list = [audit.LogSink()]
        if path:
            sinks.append(audit.JsonLinesSink(Path(path)))
        self.audit_db = None
        if self._engine is not None:
            self.audit_db = audit_store.DatabaseSink(self._engine, dataplane=self.plane_id, spill_path=settings.home() / f"audit-spill-{self.plane_id}.jsonl")
            sinks.append(self.audit_db)
        self.audit = audit.AuditWriter(sinks, maxsize=20_000)
        metrics.watch_audit(self.audit, self.audit_db)
        if old is not None:
            old.close()

    def _load(self, engine, keyring: Keyring) -> Snapshot:
        """Read the stored configuration, follow its watched secrets, compile."""
        stored = config_store.read(engine, keyring)
        self.secrets.update(stored.sources, stored.target_secrets(keyring))
        self.secrets.poll()
        snap = config_store.snapshot_of(stored, keyring, self.secrets)
        self._stored = stored
        return snap

    async def _rotate(self) -> None:
        """Poll watched secret files; a new value recompiles the running version."""
        while True:
            await asyncio.sleep(rotation.POLL)
            if not self.secrets.watched or self._keyring is None or self._stored is None:
                continue
            async with self._swap:
                try:
                    before = self.secrets.status()
                    changed = await asyncio.to_thread(self.secrets.poll)
                    if self._heartbeat is not None and self.secrets.status() != before:
                        self._heartbeat.poke()  # `rr secret status` sees a rotation or a failure at once
                    if not changed:
                        continue
                    snap = await asyncio.to_thread(config_store.snapshot_of, self._stored, self._keyring, self.secrets)
                    assert self.identities is not None
                    self.identities.rebuild(snap)
                except Exception as e:  # keep enforcing what runs; the next poll retries
                    logger.error("rr: rotated secrets could not be compiled, still using the previous ones: %s", e)
                    continue
                self.snapshot = snap

    def _stats(self) -> dict:
        dropped = (self.audit.dropped if self.audit else 0) + (self.audit_db.dropped if self.audit_db else 0)
        return {"requests": self.requests, "audit_dropped": dropped, "secrets": self.secrets.status()}

    def running(self) -> None:
        self._running = True
        if self._engine is not None and self._changes is None:
            self._changes = notify.ConfigChangeListener(self._engine.url)
            self._changes.start()
        if self._engine is not None and self._heartbeat is None:
            self._heartbeat = dataplanes.Heartbeat(
                self._engine,
                listen=dataplanes.listen_address(ctx.master),
                version=lambda: self.snapshot.version if self.snapshot else None,
                stats=self._stats,
                plane_id=self.plane_id,
            )
            self._heartbeat.start()
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        if self._rotator is None:
            self._rotator = asyncio.get_running_loop().create_task(self._rotate())
        if self.identities is not None:
            asyncio.get_running_loop().create_task(self.identities.prewarm())

    async def done(self) -> None:
        await self.approvals.close()  # held requests are answered 503 (docs/approvals.md)
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._rotator is not None:
            self._rotator.cancel()
            self._rotator = None
        if self._heartbeat is not None:
            await self._heartbeat.stop()
            self._heartbeat = None
        if self._changes is not None:
            await self._changes.aclose()
            self._changes = None
        if self._exporter is not None:
            await asyncio.to_thread(self._exporter.close)  # waits up to 0.5 s for the server thread
            self._exporter = None
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
            self.audit = None
        if self.metering is not None:
            await self.metering.close()
            self.metering = None
        if self.identities is not None:
            await self.identities.close()
        if self._engine is not None:
            self._engine.dispose()

    async def _watch(self) -> None:
        """Swap in new configuration versions; keep the running one on any failure."""
        unreachable = False
        while True:
            if self._changes is not None:
                await self._changes.wait(ctx.options.rr_reload_interval_ms / 1000)
            else:
                await asyncio.sleep(ctx.options.rr_reload_interval_ms / 1000)
            if self._engine is None or self._keyring is None or self.snapshot is None:
                continue
            try:
                version = await asyncio.to_thread(config_store.current_version, self._engine)
            except Exception as e:
                if not unreachable:
                    logger.warning("rr: database unreachable (%s); still enforcing version %d", e, self.snapshot.version)
                unreachable = True
                continue
            if unreachable:
                logger.info("rr: database reachable again")
                unreachable = False
            if version == self.snapshot.version or version == self._failed_version:
                continue
            try:
                async with self._swap:
                    snap = await asyncio.to_thread(self._load, self._engine, self._keyring)
                    assert self.identities is not None
                    self.identities.rebuild(snap)
                    self.snapshot = snap
            except Exception as e:
                self._failed_version = version
                metrics.config_reload(False)
                logger.error(
                    "rr: configuration version %d failed to load, still enforcing version %d: %s",
                    version,
                    self.snapshot.version,
                    e,
                )
                continue
            logger.info("rr now enforces configuration version %d", snap.version)
            metrics.config_reload(True, snap.version)
            if self._heartbeat is not None:
                self._heartbeat.poke()

    # ------------------------------------------------------------------ connections

    def client_connected(self, client) -> None:
        address = client.peername[0] if client.peername else None
        limit = ctx.options.rr_max_client_connections
        if limit and self.per_address.get(address, 0) >= limit:
            logger.warning("rr closes a connection from %s: it already holds %d", address, limit)
            client.error = "rr: too many connections from this address"
            return
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.clients[client.id] = ClientState()

    def client_disconnected(self, client) -> None:
        self.approvals.client_gone(client.id)  # its held requests are withdrawn
        if self.clients.pop(client.id, None) is not None:
            address = client.peername[0] if client.peername else None
            left = self.per_address.get(address, 1) - 1
            if left > 0:
                self.per_address[address] = left
            else:
                self.per_address.pop(address, None)

    def _client(self, client_id: str) -> ClientState:
        state = self.clients.get(client_id)
        if state is None:
            state = self.clients[client_id] = ClientState()
        return state

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        # The credential travels only on the CONNECT: keep it for the tunnel, off the flow.
        values = tuple(flow.request.headers.get_all("proxy-authorization"))
        if values:
            del flow.request.headers["proxy-authorization"]
        state = self._client(flow.client_conn.id)
        state.tunnel_authorization, state.tunnel = values, True
        snap = self.snapshot
        if snap is not None and flow.request.port not in snap.connect_ports:
            where = f"{flow.request.host}:{flow.request.port}"
            self.answer(flow, Decision.deny("unknown-target", reasons.CONNECT_PORT_NOT_ALLOWED, detail=f"{where}; check the URL's port"))
        elif not values and ctx.options.rr_proxy_auth_challenge:
            self.answer(flow, dataclasses.replace(Decision.deny("unauthenticated", reasons.PROXY_AUTH_CHALLENGE), status=407))

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
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
            if ctx.options.rr_connect_timeout > 0:
                asyncio.get_running_loop().call_later(ctx.options.rr_connect_timeout, self._connect_deadline, data.client.id, server)
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
            self._pinned[server.id] = server.address
            server.address = (addresses[0], port)
        except Exception:
            logger.exception("rr internal error in server_connect; refusing the connection")
            server.error = "rr internal error"

    def _connect_deadline(self, client_id: str, server) -> None:
        """rr_connect_timeout passed: a connection still without its TCP (and TLS) set-up is abandoned."""
        if server.timestamp_end is not None or (server.timestamp_tls_setup if server.tls else server.timestamp_tcp_setup):
            return
        proxy = ctx.master.addons.get("proxyserver")
        handler = proxy.connections.get(client_id) if proxy is not None else None
        io = handler.transports.get(server) if handler is not None else None
        if io is not None and io.handler is not None:
            host, port = self._pinned.get(server.id, server.address)[:2]
            detail = f"connect timeout: rr_connect_timeout is {ctx.options.rr_connect_timeout} s"
            logger.info("rr abandons the connection to %s:%s: %s", host, port, detail)
            state = self.clients.get(client_id)
            if state is not None:  # the flows waiting for it are answered with this (see `error`)
                state.refusals[(host, port)] = Decision.deny("upstream-timeout", reasons.UPSTREAM_TIMEOUT, detail=detail)
            io.handler.cancel(f"rr: upstream {detail}")

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._unpin(data.server)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._unpin(data.server)

    def _unpin(self, server) -> None:
        original = self._pinned.pop(server.id, None)
        if original is not None:
            server.address = original

    def tcp_start(self, flow) -> None:
        logger.info("rr closes a tunnel that carries no HTTP (%s)", flow.client_conn.peername)
        flow.kill()

    def udp_start(self, flow) -> None:
        logger.info("rr closes a UDP flow (%s)", flow.client_conn.peername)
        flow.kill()

    # ------------------------------------------------------------------ requests

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.is_replay:
            # decided again from scratch, audited as "<flow id>/replay-<n>" (the database keeps one record per id)
            _forget(flow)
            flow.metadata["rr_replays"] = flow.metadata.get("rr_replays", 0) + 1
        if flow.response or flow.error or not flow.live:
            return
        setattr(flow, _STARTED, time.monotonic())
        snap = self.snapshot
        if snap is None:
            self.answer(flow, Decision.deny("internal-error", reasons.NO_CONFIGURATION))
            return
        seen = wire.Stamp(flow.request.data, None)
        # a replay (mitmweb) never borrows the credential of the tunnel its flow came through
        client = None if flow.is_replay else self.clients.get(flow.client_conn.id)
        facts = flows.request_facts(flow, client.tunnel_authorization if client is not None else ())
        now = time.time()
        t0 = time.perf_counter()
        admitted = admit(snap, facts, now)
        _add_time(flow, time.perf_counter() - t0)
        if isinstance(admitted, Outcome) and admitted.decision.reason == reasons.UNKNOWN_CREDENTIAL:
            admitted = await self.verify_token(flow, snap, facts, now, admitted)
            if seen.differs(flow.request.data) is not None:  # edited (mitmweb) while the token was verified
                admitted = _changed(admitted)
        flows.strip_headers(flow.request, admitted.strip_headers)
        if isinstance(admitted, Outcome):
            if admitted.decision.reason == reasons.NO_CREDENTIAL and ctx.options.rr_proxy_auth_challenge and self._proxied_plain_http(flow, client):
                # the plain-HTTP form of the CONNECT challenge: the client sends its proxy credential on the retry
                admitted = dataclasses.replace(admitted, decision=dataclasses.replace(admitted.decision, status=407))
            self.conclude(flow, admitted, snap)
            return
        if admitted.path.target != flow.request.path:
            flow.request.path = admitted.path.target  # the upstream receives exactly the path the rules checked
        flows.name_the_target(flow.request)
        setattr(flow, _SEEN, wire.Stamp(flow.request.data, None))  # rr's own changes are part of the decision
        if admitted.needs_body:
            length = flow.request.headers.get("content-length", "")
            refused = too_large(admitted, int(length) if length.isdigit() else None, self.limits)
            if refused is not None:
                self.conclude(flow, refused, snap)
            else:
                # decided in `request`, once the body is in; whatever mitmproxy's
                # stream_large_bodies says, it is read whole (see wire.read_whole)
                wire.read_whole(flow, self.limits.inspect_bytes, admitted.over_limit_reason)
                setattr(flow, _PENDING, (admitted, facts))
            return
        await self.authorize(flow, admitted, facts, snap)
        if flow.response is None and not hasattr(flow, _PENDING):
            # Decided without the body: a large upload streams through instead of filling memory
            # (small bodies stay buffered, so mitmweb and -w can show them).
            # A body of unknown length (chunked, or HTTP/2 and /3 without content-length) streams
            # too: it could be any size (wire.framed_for_http1 frames it for an HTTP/1 upstream).
            length = flow.request.headers.get("content-length", "")
            unknown = not length and (flow.request.is_http2 or flow.request.is_http3)
            if unknown or "chunked" in flow.request.headers.get("transfer-encoding", "").lower() or (length.isdigit() and int(length) > STREAM_REQUESTS_OVER):
                flow.request.stream = ByteCounter()
                self.watch(flow)  # the body streams to the upstream: idleness counts from now

    @staticmethod
    def _proxied_plain_http(flow: http.HTTPFlow, client: ClientState | None) -> bool:
        """A request sent to rr as an HTTP proxy (absolute-form), not one inside a CONNECT tunnel."""
        return client is not None and not client.tunnel and not flow.client_conn.tls and isinstance(flow.client_conn.proxy_mode, RegularMode)

    async def verify_token(self, flow: http.HTTPFlow, snap: Snapshot, facts, now: float, unknown: Outcome) -> Admission | Outcome:
        """A credential no static digest matched may be a token a verifier accepts (jwt_verify, oauth2)."""
        identities = self.identities
        if identities is None or identities.index is None:
            return unknown
        presented = find_presented(facts, snap.caller_headers_for(facts.host, facts.port, facts.scheme))
        assert presented is not None and not isinstance(presented, Problem)
        peer = flow.client_conn.peername
        result = await identities.identify(presented.secret, client=peer[0] if peer else None)
        if isinstance(result, Refused):
            setattr(flow, _VERIFICATION, result.audit())
            return dataclasses.replace(unknown, decision=Decision.deny("unauthenticated", result.reason, detail=result.detail))
        caller, verified = result
        setattr(flow, _VERIFICATION, verified.audit())
        return admit_verified(snap, caller, presented, facts, now, verified.claims)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        pending = getattr(flow, _PENDING, None)
        if pending is None or flow.response is not None:
            if flow.response is None and "rr" in flow.metadata:
                wire.seal_body(flow.request)  # decided without it; what arrived is what goes out
                self.watch(flow).sent()
            return
        delattr(flow, _PENDING)
        admitted, facts = pending
        snap = self.snapshot
        seen = getattr(flow, _SEEN)
        if seen.differs(flow.request.data) is not None:  # edited (mitmweb) while the body arrived
            self.conclude(flow, _changed(admitted), snap, admitted)
            return
        seen.seal_body(flow.request.data)
        body = self.request_body(flow, admitted.over_limit_reason)
        if isinstance(body, Decision):
            self.conclude(flow, admitted.outcome(body), snap, admitted)
            return
        await self.authorize(flow, admitted, dataclasses.replace(facts, body=body), snap)
        if flow.response is None:
            self.watch(flow).sent()

    def request_body(self, flow: http.HTTPFlow, too_large: str = reasons.BODY_OVER_INSPECTION_LIMIT) -> bytes | Decision:
        """The request body, decoded under the inspection limit (a compressed bomb stops there)."""
        limit = ctx.options.rr_inspect_limit
        try:
            return decode_content(flow.request.raw_content or b"", flow.request.headers.get("content-encoding"), limit=limit)
        except DecodedTooLarge:
            return Decision.deny("payload-too-large", too_large, detail=f"over {limit} bytes decoded")
        except BodyError:
            return Decision.deny("invalid-request", reasons.BODY_ENCODING_INVALID)

    async def authorize(self, flow: http.HTTPFlow, admitted: Admission, facts, snap: Snapshot) -> None:
        """Rules, then meters (counted only for requests the rules let through)."""
        t0 = time.perf_counter()
        outcome, req = authorize(admitted, facts, self.limits)
        if outcome.decision.held and not outcome.report_only:
            if facts.body is None:  # held in `request`, once the whole body is in (the person sees what goes out)
                wire.read_whole(flow, self.limits.inspect_bytes, reasons.HELD_OVER_INSPECTION_LIMIT)
                setattr(flow, _PENDING, (admitted, facts))
                return
            outcome = await self.approvals.hold(flow, admitted, facts, outcome, self._engine, self.plane_id, ctx.options.rr_max_held_requests)
            if outcome.decision.allowed and self.snapshot is not snap and self.snapshot is not None:  # reloaded while held
                outcome = approvals.recheck(flow.id, outcome, self.snapshot, admitted, facts, self.limits)
            if not outcome.decision.allowed:
                self.conclude(flow, outcome, snap, admitted)
                return
        metered = req is not None and (outcome.decision.allowed or outcome.report_only)
        if metered:
            assert self.metering is not None
            plan = snap.proxies[admitted.identity.proxy].meters.plan(admitted.identity.credential, req, time.time())
            verdict = await self.metering.check(plan, admitted.identity.proxy)
        _add_time(flow, time.perf_counter() - t0)
        if metered:
            if not verdict.admitted:
                extra = [("retry-after", str(verdict.retry_after or 1))]
                if verdict.policy:
                    extra += [("ratelimit-policy", verdict.policy), ("ratelimit", verdict.ratelimit or "")]
                self.conclude(flow, quota_outcome(admitted, verdict), snap, admitted, tuple(extra))
                return
            setattr(flow, _METERED, (plan, verdict))
        injection = None
        cred = admitted.credential
        if cred is not None and cred.injection.dynamic and (outcome.decision.allowed or outcome.report_only):
            assert self.identities is not None
            try:
                injection = await self.identities.upstream_injection(cred.target, cred.name)
            except UpstreamTokenError as e:
                refused = admitted.outcome(Decision.deny("upstream-credential-error", e.reason, detail=e.detail))
                self.conclude(flow, refused, snap, admitted)
                return
        self.conclude(flow, outcome, snap, admitted, injection=injection)

    def redact_request(self, flow: http.HTTPFlow, redactor) -> None:
        """Scrub PII and secrets from the request body before it leaves (e.g. prompts to AI APIs)."""
        body = self.request_body(flow)
        if not body or isinstance(body, Decision):
            return  # a body that does not decode was refused before this point
        if is_json_content_type(flow.request.headers.get("content-type")):
            try:
                doc, counts = redactor.redact_json(parse_json(body))
                new = dump_json(doc)
            except BodyError:
                text, counts = redactor.redact_text(body.decode("utf-8", "surrogateescape"))
                new = text.encode("utf-8", "surrogateescape")
        else:
            text, counts = redactor.redact_text(body.decode("utf-8", "surrogateescape"))
            new = text.encode("utf-8", "surrogateescape")
        if counts:
            flow.request.headers.pop("content-encoding", None)
            flow.request.content = new
            self._count_redactions(flow, counts)

    def _count_redactions(self, flow: http.HTTPFlow, counts: dict[str, int]) -> None:
        total = flow.metadata["rr"].setdefault("redactions", {})
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v


    def conclude(
        self,
        flow: http.HTTPFlow,
        outcome: Outcome,
        snap: Snapshot,
        admitted: Admission | None = None,
        extra_headers: tuple = (),
        injection=None,
    ) -> None:
        """Record the decision on the flow; answer a deny, or stamp the request with what was
        decided and the injection it may carry (see wire.Stamp)."""
        seen = getattr(flow, _SEEN, None)
        if (outcome.decision.allowed or outcome.report_only) and seen is not None and seen.differs(flow.request.data) is not None:
            outcome = _changed(admitted) if admitted is not None else outcome  # edited while rr decided
        self.record(flow, outcome, snap)
        if injection is None and admitted is not None and admitted.credential is not None and not admitted.credential.injection.dynamic:
            injection = admitted.credential.injection
        if not outcome.decision.allowed and not outcome.report_only:
            # no placeholder: nothing was injected into a request that is never sent (README: mitmweb);
            # the comment and the rr view name the target credential
            self.answer(flow, outcome.decision, extra_headers)
            return
        assert admitted is not None
        if admitted.pipeline is not EMPTY:
            setattr(flow, _PIPELINE, admitted.pipeline)
            if admitted.pipeline.request_redactor is not None:
                self.redact_request(flow, admitted.pipeline.request_redactor)
                webview.show(flow)  # with the request's redaction count
        if injection is not None and not injection.empty:
            flows.show_injection(flow.request, injection)
        else:
            injection = None
        wire.stamp(flow.request, injection)
        state = self._client(flow.client_conn.id)
        key = (flow.request.host, flow.request.port)
        state.connect_policy[key] = state.connect_policy.get(key, True) and admitted.target.allow_private_addresses

    def watch(self, flow: http.HTTPFlow) -> timeouts.Watch:
        """The first-byte and idle timeouts of an admitted exchange (see rr_addon.timeouts)."""
        found = getattr(flow, _WATCH, None)
        if found is None:

            def moved() -> int:
                req, resp = flow.request.stream, flow.response.stream if flow.response is not None else None
                return getattr(req, "count", 0) + getattr(resp, "count", 0)

            opts = ctx.options
            found = timeouts.Watch(opts.rr_first_byte_timeout, opts.rr_idle_timeout, moved, lambda which: self.cut_off(flow, which))
            setattr(flow, _WATCH, found)
        return found

    def cut_off(self, flow: http.HTTPFlow, which: str) -> None:
        """A timeout expired: close the upstream connection (mitmproxy cannot kill a flow
        in transit). The caller gets 504 if nothing reached it yet; else the body breaks off."""
        if not flow.live or getattr(flow, _AUDITED, False):
            return
        option = {timeouts.FIRST_BYTE: "rr_first_byte_timeout", timeouts.IDLE: "rr_idle_timeout"}[which]
        setattr(flow, _TIMED_OUT, f"{which} timeout: {option} is {getattr(ctx.options, option)} s")
        io = _upstream_io(flow)
        if io is not None:
            logger.info("rr cuts off %s: %s (request %s)", flow.request.host, getattr(flow, _TIMED_OUT), flow.id)
            io.handler.cancel("rr: upstream timed out")

    def abandon(self, flow: http.HTTPFlow) -> None:
        """A streamed body stopped decoding: nothing more of it can be passed on, so stop
        reading the upstream now rather than at its end (the caller is not left waiting).
        Called from inside mitmproxy's processing of the upstream's data: the connection's
        task is cancelled once that returns, where mitmproxy expects a cancellation."""
        io = _upstream_io(flow)
        if io is not None:
            logger.info("rr stops reading %s: the response body cannot be scrubbed (request %s)", flow.request.host, flow.id)
            asyncio.get_running_loop().call_soon(io.handler.cancel, "rr: response body cannot be scrubbed")

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if "rr" not in flow.metadata or flow.response is None:
            return
        resp = flow.response
        if flow.metadata["rr"]["result"] in ("allow", "would-deny", "would-hold"):
            self.watch(flow).answered()
            injection = wire.attached(flow.request)
            pairs = injection.scrub if injection is not None else ()
            if pairs:  # on the raw fields: the mask has the secret's length, order and names stay
                fields = resp.headers.fields
                clean = tuple((k, scrub_bytes(v, pairs)) for k, v in fields)
                if clean != fields:
                    resp.headers.fields = clean
            metered = getattr(flow, _METERED, None)
            if metered is not None:
                plan, verdict = metered
                if verdict.policy:
                    resp.headers["RateLimit-Policy"] = verdict.policy
                    resp.headers["RateLimit"] = verdict.ratelimit or ""
            pipeline = getattr(flow, _PIPELINE, EMPTY)
            encoding = resp.headers.get("content-encoding", "identity")
            encoded = encoding.strip().lower() not in ("", "identity")
            coding = recodable(encoding)
            valued = metered is not None and metered[0].needs_response and flow.request.method != "HEAD"
            # an event stream is measured as it passes (encoded ones are read whole at the end)
            events = valued and not encoded and media_type(resp.headers.get("content-type")) == "text/event-stream"
            body = flow.request.method != "HEAD" and resp.status_code >= 200 and resp.status_code not in (204, 304)
            if pairs and encoded and body and not decodable(encoding):
                # a coding rr cannot undo could carry the echoed secret to a caller that can (fail closed)
                detail = f"content-encoding {encoding!r}"
                setattr(flow, _UNSCRUBBABLE, Decision.deny("upstream-unavailable", reasons.RESPONSE_ENCODING_UNSCRUBBABLE, detail=detail))
                resp.stream = BodyCollector(0, over=True)  # the body is never kept
                wire.defer(flow)
                resp.headers["rr-request-id"] = flow.id
                return
            held_for = (
                BODY_TOO_LARGE
                if pipeline.applies(resp.status_code, resp.headers.get("content-type"))
                else reasons.BODY_TOO_LARGE_ENCODING
                if pairs and encoded and coding is None
                else None
            )
            # a meter that reads the body gets a copy (up to rr_buffer_limit) as the response streams on
            copy = BodyCopy(ctx.options.rr_buffer_limit) if valued and not events and held_for is None else None
            if flow.request.method != "HEAD" and held_for is not None:
                # buffered (capped), processed in `response`, sent whole: see wire.defer
                length = resp.headers.get("content-length", "")
                limit = ctx.options.rr_buffer_limit
                resp.stream = BodyCollector(limit, over=length.isdigit() and int(length) > limit and not encoded)
                setattr(flow, _HELD_FOR, held_for)
                wire.defer(flow)
            elif events and flow.request.method != "HEAD":
                resp.stream = StreamScrubber(pairs, tap=metered[0].events(resp.headers, ctx.options.rr_buffer_limit))
            elif pairs and encoded and body:
                # decoded, scrubbed and encoded again as it streams (rr_addon.core.recode): its length changes
                resp.stream = Recoder(coding, pairs, tap=copy, on_fail=lambda: self.abandon(flow))
                wire.guard(flow)  # headers wait for the first scrubbed bytes; a body that stops decoding is cut
                resp.headers.pop("content-length", None)
                if not (flow.request.is_http2 or flow.request.is_http3):
                    resp.headers["transfer-encoding"] = "chunked"
            else:
                resp.stream = StreamScrubber(pairs, tap=copy)
        resp.headers["rr-request-id"] = flow.id

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        if "rr" not in flow.metadata:
            return
        resp = flow.response
        if resp is not None and resp.trailers and (injection := wire.attached(flow.request)) is not None and injection.scrub:
            # HTTP/2 trailers arrive after the body and are sent after this hook (mitmweb shows them from here)
            clean = tuple((k, scrub_bytes(v, injection.scrub)) for k, v in resp.trailers.fields)
            if clean != resp.trailers.fields:
                resp.trailers.fields = clean
        if resp is not None and isinstance(resp.stream, BodyCollector):
            await self.process_response(flow, resp, resp.stream)
        elif resp is not None and isinstance(resp.stream, StreamScrubber) and isinstance(resp.stream.tap, EventMeasure):
            await self.settle(flow, resp.stream.tap.result())
        elif resp is not None and isinstance(getattr(resp.stream, "tap", None), BodyCopy):
            await self.settle(flow, self.measure_copy(flow, resp))
        if resp is not None and isinstance(resp.stream, Recoder) and resp.stream.failed:
            # cannot be scanned any further: nothing more is passed on, and the body must not
            # look complete — 502 if nothing reached the caller yet, else its stream is cut
            logger.warning("rr stopped passing on the response of request %s: %s", flow.id, resp.stream.failed)
            wire.cut(flow)
            if wire.deferred(flow):
                self.replace_response(flow, Decision.deny("upstream-unavailable", reasons.RESPONSE_BODY_UNSCRUBBABLE, detail=resp.stream.failed))
            else:
                flow.metadata["rr"]["reason"] = f"response cut short: {resp.stream.failed}"
        self.finish(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Scrub the injected secret from a message the upstream sends (it may echo the
        upgrade's credential); mitmweb and `-w` show the message as scrubbed here. A caller's
        messages are not scanned: it never had the secret. Each message is scanned whole
        (mitmproxy hands over complete messages), so a secret within one is always caught."""
        message = flow.websocket.messages[-1] if flow.websocket is not None and flow.websocket.messages else None
        if message is None or message.from_client:
            return
        injection = wire.attached(flow.request)
        if injection is None or not injection.scrub:
            return
        try:
            clean = scrub_bytes(message.content, injection.scrub)
            if clean is not message.content:
                message.content = clean  # the mask is ASCII: a text message stays valid UTF-8
        except Exception:  # fail closed: a message rr could not scan is not passed on
            logger.exception("rr could not scrub a WebSocket message of request %s; dropping it", flow.id)
            message.drop()

    def measure_copy(self, flow: http.HTTPFlow, resp: http.Response) -> Measurement:
        """The meter values of a streamed response, from the copy its tap kept."""
        plan, copy, limit = getattr(flow, _METERED)[0], resp.stream.tap, ctx.options.rr_buffer_limit
        if copy.over:
            return plan.measure(resp.headers, None, failed=TOO_LARGE)
        encoding = None if isinstance(resp.stream, Recoder) else resp.headers.get("content-encoding")  # a Recoder's tap sees decoded bytes
        return self.measure_body(plan, resp.headers, bytes(copy.buf), resp.headers.get("content-type"), encoding, limit)

    async def settle(self, flow: http.HTTPFlow, measured: Measurement) -> None:
        """Count what the response_value meters read; note the ones that could not measure."""
        metered = getattr(flow, _METERED, None)
        if metered is None or self.metering is None:
            return
        await self.metering.add(metered[0].settle(measured))
        if measured.unmeasured:
            flow.metadata["rr"]["unmeasured"] = dict(measured.unmeasured)

    async def process_response(self, flow: http.HTTPFlow, resp: http.Response, collected: BodyCollector) -> None:
        """Meters that read the body, filters, redaction and echo scrubbing of a buffered response."""
        limit = ctx.options.rr_buffer_limit
        resp.stream = False
        metered = getattr(flow, _METERED, None)
        counting = metered is not None and metered[0].needs_response and self.metering is not None
        held_for = getattr(flow, _HELD_FOR, BODY_TOO_LARGE)  # why rr had to hold it back whole
        unscrubbable = getattr(flow, _UNSCRUBBABLE, None)
        if unscrubbable is not None:
            if counting:
                await self.settle(flow, metered[0].measure(resp.headers, None, failed=NOT_JSON))
            self.replace_response(flow, unscrubbable)
            return
        if collected.over:
            if counting:
                await self.settle(flow, metered[0].measure(resp.headers, None, failed=TOO_LARGE))
            self.replace_response(flow, Decision.deny("response-too-large", held_for, detail=f"over {limit} bytes"))
            return
        raw = bytes(collected.buf)
        ctype, encoding = resp.headers.get("content-type"), resp.headers.get("content-encoding")
        ops: list = []  # meter values, read from the document process_response parsed (before filters)
        injection = wire.attached(flow.request)
        result = process_response(
            getattr(flow, _PIPELINE, EMPTY),
            resp.status_code,
            ctype,
            encoding,
            raw,
            injection.scrub if injection else (),
            limit,
            inspect=(lambda doc: ops.append(metered[0].measure(resp.headers, doc))) if counting else None,
        )
        if counting:
            if not ops:  # not a JSON body process_response parsed: read it (header meters need nothing)
                ops.append(self.measure_body(metered[0], resp.headers, raw, ctype, encoding, limit))
            await self.settle(flow, ops[0])
        if result.redactions:
            self._count_redactions(flow, result.redactions)
        if result.decision is not None:
            decision = result.decision
            if decision.code == "response-too-large":
                decision = dataclasses.replace(decision, reason=held_for)
            self.replace_response(flow, decision)
        elif result.body is not None:
            if getattr(flow, _PIPELINE, EMPTY).filters and 200 <= resp.status_code < 300:
                flow.metadata["rr"]["filtered"] = True
            webview.show(flow)
            resp.headers.pop("content-encoding", None)
            resp.content = result.body
        else:
            resp.raw_content = raw

    @staticmethod
    def measure_body(plan, headers, raw: bytes, ctype: str | None, encoding: str | None, limit: int) -> Measurement:
        """The meter values of a whole buffered body: JSON, or an (encoded) event stream."""
        try:
            body = decode_content(raw, encoding, limit=limit)
        except DecodedTooLarge:
            return plan.measure(headers, None, failed=TOO_LARGE)
        except BodyError:
            return plan.measure(headers, None, failed=NOT_JSON)
        if media_type(ctype) == "text/event-stream":
            reader = plan.events(headers, limit)
            reader(body)
            return reader.result()
        return plan.measure(headers, body)

    def replace_response(self, flow: http.HTTPFlow, decision: Decision) -> None:
        """The caller gets rr's error instead of the upstream response (which is kept out)."""
        flow.response = flows.decision_response(decision, flow.id)
        meta = flow.metadata["rr"]
        meta.update(result="deny", status=decision.status, code=decision.code, reason=decision.reason, scope=decision.scope, rule=decision.rule)
        webview.show(flow)

    @fail_closed
    async def error(self, flow: http.HTTPFlow) -> None:
        refused = wire.refusal(flow)
        if refused is not None and "rr" not in flow.metadata:
            pending = getattr(flow, _PENDING, None)
            if pending is not None and self.snapshot is not None:  # refused while its body arrived
                self.record(flow, pending[0].outcome(Decision.deny(*refused)), self.snapshot)
            else:
                flow.metadata["rr"] = _blank_meta(self.snapshot)  # reached the connection undecided
        if "rr" not in flow.metadata or getattr(flow, _AUDITED, False):
            return
        meta = flow.metadata["rr"]
        stream = flow.response.stream if flow.response is not None else None
        if isinstance(stream, StreamScrubber) and isinstance(stream.tap, EventMeasure):
            await self.settle(flow, stream.tap.result(broken=True))  # what the caller got before the break
        elif (isinstance(stream, BodyCollector) or isinstance(getattr(stream, "tap", None), BodyCopy)) and (metered := getattr(flow, _METERED, None)) is not None and metered[0].needs_response:
            await self.settle(flow, metered[0].measure(flow.response.headers, None, failed=STREAM_BROKEN))
        # nothing reached the caller yet (no response, or one held back to be filtered): answer in JSON
        if (flow.response is None or wire.deferred(flow)) and (meta["result"] != "deny" or refused is not None):
            state = self.clients.get(flow.client_conn.id)
            refusal = state.refusals.pop((flow.request.host, flow.request.port), None) if state else None
            msg = flow.error.msg if flow.error else ""
            if refused is not None:
                decision = Decision.deny(*refused)
                logger.warning("rr refused request %s below the hooks: %s", flow.id, decision.reason)
            elif refusal is not None:
                decision = refusal
            elif isinstance(flow.response.stream if flow.response is not None else None, Recoder) and flow.response.stream.failed:
                decision = Decision.deny("upstream-unavailable", reasons.RESPONSE_BODY_UNSCRUBBABLE, detail=flow.response.stream.failed)
            elif getattr(flow, _TIMED_OUT, None) or "timed out" in msg.lower() or "timeout" in msg.lower():
                decision = Decision.deny("upstream-timeout", reasons.UPSTREAM_TIMEOUT, detail=getattr(flow, _TIMED_OUT, None) or msg)
            else:
                decision = Decision.deny("upstream-unavailable", reasons.UPSTREAM_UNAVAILABLE, detail=_with_hint(flow, msg))
            wire.answer_errors_with(flow, flows.decision_response(decision, flow.id))
            metered = getattr(flow, _METERED, None)
            if metered is not None and self.metering is not None and not _reached_upstream(flow, refused):
                await self.metering.add(metered[0].refund())  # nothing went out: the quota is not used
                delattr(flow, _METERED)
            meta.update(result="deny", code=decision.code, reason=decision.reason, scope=decision.scope, rule=decision.rule)
            meta["status"] = decision.status
            if refused is not None:
                meta["result"] = "deny"
            webview.show(flow)
        elif isinstance(stream, Recoder) and stream.failed:  # rr stopped reading it: the caller's stream is cut
            meta["reason"] = f"response cut short: {stream.failed}"
        self.finish(flow)

    # ------------------------------------------------------------------ commands

    @command.command("rr.explain")
    def explain_flows(self, selection: Sequence[flow.Flow]) -> str:
        """Explain rr's decision for each flow: every scope and rule, as the proxy evaluated it."""
        if self.snapshot is None:
            raise exceptions.CommandError("rr has no configuration loaded")
        text = "\n".join(self.explain_flow(f) if isinstance(f, http.HTTPFlow) else f"{f.id}: not an HTTP flow" for f in selection)
        for line in text.splitlines():  # one record per line: a record's args have their line breaks escaped
            logger.info("%s", line)
        return text

    def explain_flow(self, f: http.HTTPFlow) -> str:
        """The decision tree of one flow, re-evaluated with the loaded configuration (the rr view, rr.explain)."""
        from rr_addon.cli.render import explanation_tree, plain
        from rr_addon.core.decide import explain

        snap = self.snapshot
        meta = f.metadata.get("rr")
        if snap is None:
            return "rr has no configuration loaded"
        if not meta or not meta.get("proxy"):
            return f"{f.id}: no authenticated rr decision on this flow"
        caller = snap.proxies.get(meta["proxy"]).callers.get(meta["credential"]) if meta["proxy"] in snap.proxies else None
        if caller is None:
            return f"{f.id}: credential {meta['proxy']}/{meta['credential']} is no longer configured"
        body = self.request_body(f)
        facts = dataclasses.replace(flows.request_facts(f), body=body if isinstance(body, bytes) else None)
        title = f"{f.request.method} {f.request.pretty_url} as {caller.proxy}/{caller.name} (configuration version {snap.version})"
        if meta.get("config_version") not in (None, snap.version):
            title += f"; decided under version {meta['config_version']}"
        return plain(explanation_tree(title, explain(snap, caller, facts, self.limits)))

    # ------------------------------------------------------------------ helpers

    def answer(self, flow: http.HTTPFlow, decision: Decision, extra_headers: tuple = ()) -> None:
        wire.detach(flow.request)
        flow.response = flows.decision_response(decision, flow.id, extra_headers)

    def fail(self, flow: http.HTTPFlow, *, final: bool) -> None:
        """Answer 500 and forward nothing; `final` when the flow's last hook failed (audit it now)."""
        wire.detach(flow.request)
        flow.response = flows.error_response("internal-error", reasons.INTERNAL_ERROR, flow.id)
        old = flow.metadata.get("rr")
        meta = _blank_meta(None)
        if isinstance(old, dict):
            meta.update({k: old.get(k) for k in meta})
        meta.update(result="error", status=500, code="internal-error", reason=reasons.INTERNAL_ERROR)
        flow.metadata["rr"] = meta
        webview.show(flow)
        if final:
            try:
                self.finish(flow)
            except Exception:
                logger.exception("rr could not write the audit record of request %s", flow.id)

    def record(self, flow: http.HTTPFlow, outcome: Outcome, snap: Snapshot) -> None:
        d = outcome.decision
        result = d.result if d.allowed or not outcome.report_only else "would-hold" if d.held else "would-deny"
        ident, route = outcome.identity, outcome.route
        flow.metadata["rr"] = {
            "result": result,
            "status": d.status,
            "code": d.code,
            "reason": d.reason,
            "scope": d.scope,
            "rule": d.rule,
            "proxy": ident.proxy if ident else None,
            "credential": ident.credential if ident else None,
            "channel": ident.channel if ident else None,
            "token": ident.token if ident else None,
            "target": route.target if route else None,
            "target_credential": route.target_credential if route else None,
            "config_version": snap.version,
            **(getattr(flow, _VERIFICATION, None) or {}),
            **approvals.audit_fields(flow),
        }
        webview.show(flow)

    def finish(self, flow: http.HTTPFlow) -> None:
        """Write the flow's one audit record."""
        watch = getattr(flow, _WATCH, None)
        if watch is not None:
            watch.cancel()
        if getattr(flow, _AUDITED, False) or self.audit is None:
            return
        meta = flow.metadata["rr"]
        started = getattr(flow, _STARTED, None)
        req, resp = flow.request, flow.response
        stream = getattr(resp, "stream", None) if resp is not None else None
        bytes_out = stream.count if isinstance(stream, StreamScrubber) else stream.sent if isinstance(stream, Recoder) else (len(resp.raw_content or b"") if resp is not None else 0)
        metered = getattr(flow, _METERED, None)
        self.audit.submit(
            audit.new_record(
                request_id=flow.id if not flow.is_replay else f"{flow.id}/replay-{flow.metadata.get('rr_replays', 1)}",
                result=meta["result"],
                status=resp.status_code if resp is not None else meta["status"],
                code=meta["code"],
                reason=meta["reason"],
                scope=meta["scope"],
                rule=meta["rule"],
                proxy=meta["proxy"],
                credential=meta["credential"],
                channel=meta["channel"],
                target=meta["target"],
                target_credential=meta["target_credential"],
                method=req.method,
                scheme=req.scheme,
                host=req.host,
                port=req.port,
                path=req.path.partition("?")[0],
                client=flow.client_conn.peername[0] if flow.client_conn.peername else None,
                bytes_in=req.stream.count if isinstance(req.stream, ByteCounter) else len(req.raw_content or b""),
                bytes_out=bytes_out,
                latency_ms=round((time.monotonic() - started) * 1000, 3) if started else None,
                config_version=meta["config_version"],
                dataplane=self.plane_id,
                decision_ms=round(getattr(flow, _DECISION_TIME, 0.0) * 1000, 3),
                meters=[m.name for m in metered[0].meters] if metered is not None else [],
                degraded=UNCOUNTED if metered is not None and metered[1].degraded and metered[1].admitted else None,
                redactions=meta.get("redactions") or {},
                unmeasured=meta.get("unmeasured"),
                subject=meta.get("subject"),
                issuer=meta.get("issuer"),
                verification=meta.get("verification"),
                token=meta.get("token"),
                approval=meta.get("approval"),
            )
        )
        setattr(flow, _AUDITED, True)
        self.requests += 1
        decision = getattr(flow, _DECISION_TIME, None)
        metrics.request_done(
            meta["proxy"],
            meta["target"],
            meta["code"],
            decision,
            result=meta["result"],
            total_seconds=(time.monotonic() - started) if started else None,
        )


# Options that decide where secrets may go or what rr sees: fixed once rr runs.
FROZEN_OPTIONS = frozenset(
    {
        "ssl_insecure",
        "ssl_verify_upstream_trusted_ca",
        "ssl_verify_upstream_trusted_confdir",
        "proxy_debug",
        "mode",
        "upstream_auth",
        "ignore_hosts",
        "allow_hosts",
        "tcp_hosts",
        "udp_hosts",
        "confdir",
        "validate_inbound_headers",
        "body_size_limit",
        "stream_large_bodies",
        "store_streamed_bodies",
    }
)

_PER_FLOW = (_AUDITED, _STARTED, _PENDING, _METERED, _PIPELINE, _WATCH, _TIMED_OUT, _HELD_FOR, _DECISION_TIME, _VERIFICATION, _SEEN, _UNSCRUBBABLE, approvals.AUDIT)


def _forget(flow: http.HTTPFlow) -> None:
    watch = flow.__dict__.get(_WATCH)
    if watch is not None:
        watch.cancel()
    for name in _PER_FLOW:
        flow.__dict__.pop(name, None)
    flow.metadata.pop("rr", None)
    wire.forget(flow)


def _upstream_io(flow: http.HTTPFlow):
    """mitmproxy's transport of this flow's upstream connection (its reading task: `.handler`), or None."""
    server = ctx.master.addons.get("proxyserver")
    handler = server.connections.get(flow.client_conn.id) if server is not None else None
    io = handler.transports.get(flow.server_conn) if handler is not None else None
    return io if io is not None and io.handler is not None else None


def _blank_meta(snap: Snapshot | None) -> dict:
    meta = dict.fromkeys(("proxy", "credential", "channel", "target", "target_credential", "scope", "rule", "config_version"))
    meta.update(result="deny", status=None, code=None, reason="", config_version=snap.version if snap else None)
    return meta


def _changed(admitted: Admission | Outcome) -> Outcome:
    """The refusal of a request that changed while rr was deciding on it."""
    decision = Decision.deny("access-denied", reasons.CHANGED_AFTER_DECISION)
    if isinstance(admitted, Admission):
        return dataclasses.replace(admitted.outcome(decision), report_only=False)
    return dataclasses.replace(admitted, decision=decision, report_only=False)


def _reached_upstream(flow: http.HTTPFlow, refused) -> bool:
    """Whether any of the request may have reached the upstream: rr refused it below
    the hooks, or its connection never opened (refused, failed, or its TLS handshake
    failed), then nothing went out. A connection that was open counts as reached."""
    if refused is not None:
        return False
    server = flow.server_conn
    if server is None or server.timestamp_tcp_setup is None:
        return False
    return not (server.tls and server.timestamp_tls_setup is None)


UNTRUSTED_CA_HINT = (
    "if the upstream's certificate is issued by a private CA, trust that CA with "
    "--set ssl_verify_upstream_trusted_ca=/path/to/ca.pem (see README, Upstreams with a private CA)"
)


def _with_hint(flow: http.HTTPFlow, msg: str) -> str:
    """mitmproxy's upstream error, with what to do about a certificate rr cannot verify."""
    if "certificate verify failed" not in msg.lower():
        return msg
    logger.warning("rr: upstream certificate of %s:%s is not trusted (%s); %s", flow.request.host, flow.request.port, msg, UNTRUSTED_CA_HINT)
    return f"{msg}; {UNTRUSTED_CA_HINT}"


def _add_time(flow: http.HTTPFlow, seconds: float) -> None:
    setattr(flow, _DECISION_TIME, getattr(flow, _DECISION_TIME, 0.0) + seconds)


class ByteCounter:
    """A `request.stream` callable: passes the body through, counting it."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, chunk: bytes) -> bytes:
        self.count += len(chunk)
        return chunk


wire.install()

addons = [RR()]
