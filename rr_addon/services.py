"""What a running data plane opens and closes: the configuration store, meter counters,
audit sinks, the metrics exporter, the heartbeat and the change listener.

No mitmproxy here: the addon passes option values in and turns `ServiceError`
into mitmproxy's `OptionsError`. The request pipeline (`gate`) gets the
identities and meters opened here; the reload watcher (`reload`) the store.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable

from rr_addon import metrics, settings
from rr_addon.audit.writer import AuditWriter, JsonLinesSink, LogSink
from rr_addon.crypto import Keyring, MasterKeyError, master_keys
from rr_addon.gate import Gate
from rr_addon.hybrid import approvals as hybrid_approvals
from rr_addon.hybrid import dataplane as hybrid
from rr_addon.identity.service import Identities
from rr_addon.counters.metering import Metering
from rr_addon.counters import BackendUnavailable, open_backend
from rr_addon.reload import Reloader
from rr_addon.store import approvals, audit_store, dataplanes, notify
from rr_addon.store.db import DatabaseError, check_schema, make_engine, redacted_url
from rr_addon.store.oauth_grants import DatabaseRefreshTokens

logger = logging.getLogger("rr")


class ServiceError(Exception):
    """A service could not be opened; the message is for the operator."""


class Services:
    def __init__(self, gate: Gate, reloader: Reloader, plane_id: str) -> None:
        self.gate, self.reloader, self.plane_id = gate, reloader, plane_id
        self.engine: Any = None
        self.audit: AuditWriter | None = None
        self.audit_db: audit_store.DatabaseSink | None = None
        self.changes: notify.ConfigChangeListener | None = None
        self.heartbeat: dataplanes.Heartbeat | None = None
        self.exporter: metrics.Exporter | None = None
        self.link: hybrid.Link | None = None  # hybrid data plane: the control plane instead of a database
        self.redis_url: str | None = None
        self._ledger: Any = None
        self._closing: set[asyncio.Task] = set()  # replaced counter backends still closing

    def open_store(self, url: str | None, idp_ca_file: str | None, bundle: str = "", control_plane: str = ""):
        """The database, its master keys and the snapshot compiled from it (with its verifiers);
        for a hybrid data plane (`bundle`), the control plane instead (rr_addon/hybrid)."""
        try:
            if hybrid.requested(bundle, control_plane):
                return self._open_control_plane(bundle, control_plane, idp_ca_file)
            engine = make_engine(url, existing=True)
            check_schema(engine)
            keyring = Keyring(master_keys(settings.home()))
            snapshot = self.reloader.load(engine, keyring)
            identities = Identities(idp_ca_file, refresh_tokens=DatabaseRefreshTokens(engine, keyring))
            identities.rebuild(snapshot)
        except (DatabaseError, MasterKeyError, LookupError, hybrid.LinkError) as e:
            raise ServiceError(f"rr: {e}") from None
        except Exception as e:
            raise ServiceError(f"rr: cannot load the configuration: {e}") from None
        self.engine, self.gate.identities = engine, identities
        self.reloader.engine, self.reloader.keyring = engine, keyring
        metrics.config_loaded(snapshot.version)
        logger.info(
            "rr enforces configuration version %d (%d proxies, %d targets) from %s",
            snapshot.version,
            len(snapshot.proxies),
            len(snapshot.targets),
            redacted_url(str(engine.url)),
        )
        return snapshot

    def _open_control_plane(self, bundle: str, control_plane: str, idp_ca_file: str | None):
        """Hybrid: the configuration from the control plane (or the cache); no database."""
        self.link = hybrid.open_link(bundle, control_plane, self.plane_id)
        snapshot = self.reloader.compile(self.link.first(), self.link.keyring)
        identities = Identities(idp_ca_file, refresh_tokens=hybrid.refresh_tokens(self.link))  # rotated refresh tokens: in its spool, encrypted
        identities.rebuild(snapshot)
        self.gate.identities = identities
        self.reloader.keyring = self.link.keyring
        metrics.config_loaded(snapshot.version)
        logger.info("rr enforces configuration version %d (%d proxies, %d targets) from the control plane %s", snapshot.version, len(snapshot.proxies), len(snapshot.targets), self.link.url)
        return snapshot

    def open_counters(self, redis_url: str | None) -> None:
        old = self.gate.metering
        try:
            backend = open_backend(redis_url=redis_url, engine=self.engine or hybrid.spool_of(self.link))
            self.redis_url = redis_url
        except BackendUnavailable as e:
            raise ServiceError(f"rr: meter counters unavailable: {e}") from None
        self.gate.metering = Metering(backend)
        logger.info("rr counts meters in %s", "Redis " + redacted_url(redis_url) if redis_url else "the embedded database")
        if old is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop runs, so nothing is using it: close it now
                asyncio.run(old.close())
            else:  # in the background; the set holds the task until it ends (the loop keeps only a weak reference)
                task = loop.create_task(old.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def open_audit(self, path: str) -> None:
        old = self.audit
        sinks: list = [LogSink()]
        if path:
            sinks.append(JsonLinesSink(Path(path)))
        self.audit_db = None
        if (engine := self.engine or hybrid.spool_of(self.link)) is not None:
            self.audit_db = audit_store.DatabaseSink(engine, dataplane=self.plane_id, spill_path=settings.home() / f"audit-spill-{self.plane_id}.jsonl")
            sinks.append(self.audit_db)
        self.audit = AuditWriter(sinks, maxsize=20_000)
        metrics.watch_audit(self.audit, self.audit_db)
        if old is not None:
            old.close()

    def serve_metrics(self, port: int, host: str) -> None:
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        if port:
            try:
                self.exporter = metrics.serve(port, host)
            except OSError as e:
                raise ServiceError(f"rr: cannot serve metrics on {host}:{port}: {e}") from None

    def start(
        self, listen: Callable[[], str | None], version: Callable[[], int | None], stats: Callable[[], dict], install: Callable[[Any], None] | None = None
    ) -> None:
        """Once rr runs: the change listener and the heartbeat (with a database), or the link to the control plane."""
        if self.link is not None and install is not None and not self.link.started:
            hybrid.start(self.link, self, listen=listen(), stats=stats, install=install)
        if self.engine is not None and self.changes is None:
            self.changes = notify.ConfigChangeListener(self.engine.url)
            self.changes.start()
        if self.engine is not None and self.heartbeat is None:
            self.heartbeat = dataplanes.Heartbeat(self.engine, listen=listen(), version=version, stats=stats, plane_id=self.plane_id)
            self.heartbeat.start()

    def approval_ledger(self):
        """Where held requests are recorded and decided: the database, or a hybrid
        data plane's control plane (docs/approvals.md); None: nowhere (refused)."""
        if self._ledger is None:
            if self.engine is not None:
                self._ledger = approvals.DatabaseLedger(self.engine)
            elif self.link is not None:
                self._ledger = hybrid_approvals.RemoteLedger(self.link)
        return self._ledger

    def poke(self) -> None:
        """Tell the control plane at once (a new version, a rotated secret)."""
        if self.heartbeat is not None:
            self.heartbeat.poke()

    def audit_dropped(self) -> int:
        return (self.audit.dropped if self.audit else 0) + (self.audit_db.dropped if self.audit_db else 0)

    async def close(self) -> None:
        if self.heartbeat is not None:
            await self.heartbeat.stop()
            self.heartbeat = None
        if self.changes is not None:
            await self.changes.aclose()
            self.changes = None
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.close)  # waits up to 0.5 s for the server thread
            self.exporter = None
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
            self.audit = None
        if self.gate.metering is not None:
            await self.gate.metering.close()
            self.gate.metering = None
        if isinstance(self._ledger, hybrid_approvals.RemoteLedger):
            self._ledger.dispose()
        self._ledger = None
        if self.link is not None:
            await asyncio.to_thread(self.link.stop)  # after the audit flush: what it spooled is sent once more
            self.link = None
        if self.gate.identities is not None:
            await self.gate.identities.close()
        if self.engine is not None:
            self.engine.dispose()
