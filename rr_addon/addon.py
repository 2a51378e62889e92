"""rr as a mitmproxy addon: `mitmdump -s rr_addon/addon.py` or `rr run`.

Thin glue: the options (`rr_addon.mitm.options`), the stores and services
opened in `configure`, the background loops started in `running`, and hooks
that hand each flow to its module — connection guards (`mitm.connections`),
the request side (`mitm.requests`, which asks `rr_addon.gate` for the
verdict), the response side (`mitm.responses`) and the records
(`mitm.records`). Any exception inside a flow hook answers 500 and forwards
nothing (`fail_closed`). docs/architecture.md walks one request through them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
from collections.abc import Sequence

from mitmproxy import command, contentviews, ctx, exceptions, flow, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import server_hooks

from rr_addon.core.decide import Limits
from rr_addon.core.snapshot import Snapshot
from rr_addon.core.terminal import escape_log_output
from rr_addon.mitm import approvals
from rr_addon.gate import Gate
from rr_addon.mitm import explaining, options, patches, records, requests, responses, webview
from rr_addon.mitm.connections import ConnectionGuard
from rr_addon.mitm.logfilters import quiet_streaming_lines
from rr_addon.reload import Reloader
from rr_addon.services import ServiceError, Services
from rr_addon.store import dataplanes

logger = logging.getLogger("rr")


def fail_closed(hook):
    """Any exception in a flow hook answers 500 internal-error and forwards nothing."""

    def failed(self: RR, flow: http.HTTPFlow) -> None:
        logger.exception("rr internal error in %s hook, request %s; answering 500", hook.__name__, flow.id)
        records.fail(self, flow, final=hook.__name__ in ("response", "error"))

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
        self.gate = Gate()  # the request pipeline and the services it awaits (identities, meters)
        self.guard = ConnectionGuard()
        self.reloader = Reloader()
        self.plane_id = dataplanes.new_id()
        self.services = Services(self.gate, self.reloader, self.plane_id)
        self.approvals = approvals.Approvals()  # requests held for a person's decision
        self.requests = 0
        self._tasks: list[asyncio.Task] = []
        self._lazy = False  # connection_strategy is lazy from the first configure on
        self._running = False  # from then on, FROZEN_OPTIONS and rr's own options cannot change

    @property
    def audit(self):  # the audit writer records.finish submits to
        return self.services.audit

    # ------------------------------------------------------------------ lifecycle

    def load(self, loader: Loader) -> None:
        escape_log_output()  # request lines and errors carry caller bytes: no terminal control sequences
        contentviews.add(webview.RRView(self.explain_flow))
        quiet_streaming_lines()
        options.declare(loader)

    def configure(self, updated: set[str]) -> None:
        options.check(updated, running=self._running, lazy=self._lazy)
        self._lazy = True
        opts = ctx.options
        try:
            if "rr_database_url" in updated:
                self.snapshot = self.services.open_store(opts.rr_database_url or None, opts.rr_idp_ca_file or None, opts.rr_dataplane_bundle, opts.rr_control_plane)
            if "rr_database_url" in updated or "rr_redis_url" in updated:
                self.services.open_counters(opts.rr_redis_url or os.environ.get("RR_REDIS_URL") or None)
            if "rr_inspect_limit" in updated:
                self.gate.limits = Limits(inspect_bytes=opts.rr_inspect_limit)
            if "rr_audit_file" in updated or "rr_database_url" in updated or self.services.audit is None:
                self.services.open_audit(opts.rr_audit_file)
            if "rr_metrics_port" in updated or "rr_metrics_host" in updated:
                self.services.serve_metrics(opts.rr_metrics_port, opts.rr_metrics_host)
        except ServiceError as e:
            raise exceptions.OptionsError(str(e)) from None

    def _install(self, snap: Snapshot) -> None:
        """A new snapshot (reload or rotation): its verifiers first, so a failure keeps the old one."""
        assert self.gate.identities is not None
        self.gate.identities.rebuild(snap)
        self.snapshot = snap

    def _stats(self) -> dict:
        return {"requests": self.requests, "audit_dropped": self.services.audit_dropped(), "secrets": self.reloader.secrets.status()}

    def running(self) -> None:
        self._running = True
        self.services.start(lambda: dataplanes.listen_address(ctx.master), lambda: self.snapshot.version if self.snapshot else None, self._stats, self._install)
        loop = asyncio.get_running_loop()
        if not self._tasks:
            interval = lambda: ctx.options.rr_reload_interval_ms / 1000  # noqa: E731
            changes, poke = (lambda: self.services.changes), self.services.poke
            self._tasks = [
                loop.create_task(self.reloader.watch(lambda: self.snapshot, self._install, interval, changes, poke)),
                loop.create_task(self.reloader.rotate(self._install, poke)),
            ]
        if self.gate.identities is not None:
            loop.create_task(self.gate.identities.prewarm())

    async def done(self) -> None:
        await self.approvals.close()  # held requests are answered 503 (docs/approvals.md)
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        await self.services.close()

    # ------------------------------------------------------------------ connections

    def client_connected(self, client) -> None:
        self.guard.client_connected(client, ctx.options.rr_max_client_connections)

    def client_disconnected(self, client) -> None:
        self.approvals.client_gone(client.id)  # its held requests are withdrawn
        self.guard.client_disconnected(client)

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        snap = self.snapshot
        refused = self.guard.tunnel(flow, snap.connect_ports if snap is not None else None, ctx.options.rr_proxy_auth_challenge)
        if refused is not None:
            records.answer(flow, refused)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        await self.guard.server_connect(data, ctx.options.rr_connect_timeout, self.guard.connect_deadline)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.guard.unpin(data.server)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.guard.unpin(data.server)

    def tcp_start(self, flow) -> None:
        logger.info("rr closes a tunnel that carries no HTTP (%s)", flow.client_conn.peername)
        flow.kill()

    def udp_start(self, flow) -> None:
        logger.info("rr closes a UDP flow (%s)", flow.client_conn.peername)
        flow.kill()

    # ------------------------------------------------------------------ flows

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        await requests.requestheaders(self, flow)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        await requests.request(self, flow)

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        responses.responseheaders(self, flow)

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        await responses.response(self, flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        responses.websocket_message(flow)

    @fail_closed
    async def error(self, flow: http.HTTPFlow) -> None:
        await responses.error(self, flow)

    def finish(self, flow: http.HTTPFlow) -> None:
        """Write the flow's one audit record."""
        records.finish(self, flow)

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
        return explaining.explain_flow(self.snapshot, f, self.gate.limits)


patches.install_wire()

addons = [RR()]
