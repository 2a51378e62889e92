"""The data plane's side of hybrid mode (`rr run --control-plane URL
--dataplane-bundle FILE`): no database; the configuration comes from the
control plane, the audit trail, heartbeats and usage go back to it.

- At start: the configuration from the control plane, else the last good one
  from the encrypted cache (`$RR_HOME/dataplane/config.sealed.json`, the
  envelope as received: sealed to this data plane's key and signed by the
  control plane); neither is a refusal to start.
- Then a long poll (`GET /v1/config?after=V&wait=25`) answers as soon as the
  version changes; the new configuration is compiled and swapped in by the
  addon (`install`), then cached. One that fails to load is logged, not cached,
  and the running one stays.
- Audit records go to the local spool (`rr_addon.hybrid.spool`) and a sender
  delivers them in order; the control plane skips request ids it has, so a
  batch resent after a lost answer is not duplicated; only acknowledged
  records leave the spool.
- Heartbeats (with whether the configuration is current or stale, and since
  when) and meter counters every few seconds.

Everything runs in two threads of its own with blocking httpx clients; the
proxy's event loop only sees `install` and a counter read."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
from prometheus_client import Gauge

from rr_addon import metrics
from rr_addon.crypto import Keyring
from rr_addon.hybrid import bundle as bundles
from rr_addon.hybrid import payload, sealing, spool
from rr_addon.store import dataplanes
from rr_addon.store.config_store import Stored

logger = logging.getLogger("rr.dataplane")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per long poll and report otherwise

LONG_POLL = 25.0
HEARTBEAT = dataplanes.HEARTBEAT_INTERVAL
SEND_BATCH = 500
CACHE = "config.sealed.json"
STATE = "state.json"
MAX_RETRY = 5.0

CONNECTED = Gauge(
    "rr_control_plane_connected", "1 if the last exchange with the control plane succeeded, else 0 (hybrid data planes).", registry=metrics.METRICS.registry
)
STALE_SINCE = Gauge(
    "rr_config_stale_since_seconds",
    "Unix time since which this data plane could not confirm its configuration with the control plane; 0 while current.",
    registry=metrics.METRICS.registry,
)
AUDIT_UNSENT = Gauge("rr_audit_undelivered", "Audit records in the local spool, not yet acknowledged by the control plane.", registry=metrics.METRICS.registry)


class LinkError(Exception):
    """The data plane cannot start: the message says why and what to do."""


def directory(home: Path) -> Path:
    return home / "dataplane"


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds") if t else None


@dataclass
class State:
    """What `rr status` on a data plane and its heartbeat report."""

    name: str
    control_plane: str
    config_version: int | None = None
    source: str = "none"  # control-plane | cache
    connected: bool = False
    stale_since: float | None = None  # while the control plane cannot be reached (or refuses)
    last_contact: float | None = None
    revoked: bool = False
    error: str | None = None
    undelivered_audit: int = 0
    usage_reset: int | None = None  # the last `rr usage reset` of the control plane handled (this run)

    def as_json(self) -> dict:
        return {
            "dataplane": self.name,
            "control_plane": self.control_plane,
            "config_version": self.config_version,
            "config_source": self.source,
            "connected": self.connected,
            "stale": self.stale_since is not None,
            "stale_since": _iso(self.stale_since),
            "last_contact": _iso(self.last_contact),
            "revoked": self.revoked,
            "error": self.error,
            "undelivered_audit": self.undelivered_audit,
            "usage_reset": self.usage_reset,
        }


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Link:
    def __init__(self, bundle_path: Path, home: Path, url: str | None = None, *, plane_id: str | None = None):
        try:
            self.bundle = bundles.read(bundle_path)
            self.url = bundles.check_url(url) if url else self.bundle.control_plane
            self._ssl = self.bundle.ssl_context()
        except bundles.BundleError as e:
            raise LinkError(str(e)) from None
        self.dir = directory(home)
        self.spool = spool.open_spool(self.dir)
        self.keyring: Keyring = payload.session_keyring()
        self.plane_id = plane_id or dataplanes.new_id()  # the control plane shows it as NAME/<this>
        self.state = State(self.bundle.name, self.url)
        self.started_at = datetime.now(timezone.utc)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failed_version: int | None = None
        self._beat_due = False  # report a new version at once, not at the next beat
        self.listen: str | None = None
        self.stats: Callable[[], dict] = dict
        self.counters: Callable[[], dict[str, int]] | None = None
        self.apply_resets: Callable[[list[dict]], Awaitable[int | None]] | None = None  # usage resets from the control plane
        self.scope = f"dataplane:{self.bundle.name}"

    # ------------------------------------------------------------------ http

    def _client(self, timeout: float) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self._ssl, timeout=timeout, trust_env=False)

    def _call(self, client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
        r = client.request(method, path, **kw)
        if r.status_code in (401, 403):
            try:
                message = r.json().get("error", r.text)
            except ValueError:
                message = r.text
            raise Refused(r.status_code, message)
        if r.status_code >= 400:
            raise httpx.HTTPStatusError(f"control plane answered {r.status_code}: {r.text[:300]}", request=r.request, response=r)
        self._contact(config=path == "/v1/config")
        return r

    def _contact(self, *, config: bool = False) -> None:
        """The control plane answered; `config`: it confirmed (or sent) the configuration."""
        self.state.connected, self.state.last_contact, self.state.error = True, time.time(), None
        self.state.revoked = False
        if config and self.state.source == "control-plane":
            self.state.stale_since = None
        self._publish()

    def _lost(self, why: str, *, config: bool = False) -> None:
        """The control plane did not answer (or refused); `config`: the configuration could not be confirmed."""
        first = self.state.connected or self.state.error is None
        self.state.connected = False
        self.state.error = why
        if config and self.state.stale_since is None:
            self.state.stale_since = time.time()
        if first:
            logger.warning(
                "rr: control plane %s unreachable (%s); still enforcing configuration version %s (stale since %s)",
                self.url, why, self.state.config_version, _iso(self.state.stale_since),
            )
        self._publish()

    def _refused(self, e: Refused) -> None:
        if not self.state.revoked:
            logger.error("rr: the control plane refuses this data plane (%s); no configuration updates, still enforcing version %s", e.message, self.state.config_version)
        self.state.revoked = e.status == 403
        self._lost(f"refused: {e.message}", config=True)  # refused for one request: refused for all

    def _publish(self) -> None:
        CONNECTED.set(1 if self.state.connected else 0)
        STALE_SINCE.set(self.state.stale_since or 0)
        try:
            path = self.dir / STATE
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({**self.state.as_json(), "id": f"{self.bundle.name}/{self.plane_id}", "pid": os.getpid(), "updated_at": _iso(time.time())}, indent=2))
            os.replace(tmp, path)
        except OSError:
            pass

    # ------------------------------------------------------------------ configuration

    def _open(self, envelope: dict) -> Stored:
        version, doc = sealing.open_sealed(envelope, name=self.bundle.name, private=self.bundle.private, verifier=self.bundle.verifier)
        stored = payload.stored_from(doc, self.keyring)
        if stored.version != version:
            raise sealing.SealError("the sealed version and the document's version differ")
        return stored

    def _fetch(self, client: httpx.Client, after: int, wait: float) -> dict | None:
        r = self._call(client, "GET", "/v1/config", params={"after": after, "wait": wait})
        return None if r.status_code == 204 else r.json()["envelope"]

    def _cache(self, envelope: dict) -> None:
        path = self.dir / CACHE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(envelope, f)
        os.replace(tmp, path)

    def first(self, timeout: float = 5.0) -> Stored:
        """The configuration to start with: the control plane's, else the cached one."""
        why = ""
        try:
            with self._client(timeout) as c:
                envelope = self._fetch(c, -1, 0)
            assert envelope is not None
            stored = self._open(envelope)
            self._cache(envelope)
            self.state.source, self.state.config_version = "control-plane", stored.version
            self._contact(config=True)
            return stored
        except Refused as e:
            self._refused(e)
            why = f"it refused this data plane: {e.message}"
        except (httpx.HTTPError, OSError) as e:
            why = f"{type(e).__name__}: {e}"
            self._lost(why, config=True)
        except (sealing.SealError, ValueError) as e:
            why = f"its configuration is unusable: {e}"
            self._lost(why, config=True)
        try:
            envelope = json.loads((self.dir / CACHE).read_text())
        except FileNotFoundError:
            raise LinkError(f"cannot get the configuration from the control plane {self.url} ({why}) and there is no cached configuration in {self.dir}") from None
        except (OSError, ValueError) as e:
            raise LinkError(f"cannot get the configuration from the control plane {self.url} ({why}) and the cache {self.dir / CACHE} is unreadable: {e}") from None
        try:
            stored = self._open(envelope)
        except (sealing.SealError, ValueError) as e:
            raise LinkError(f"cannot get the configuration from the control plane {self.url} ({why}) and the cache {self.dir / CACHE} is not usable: {e}") from None
        self.state.source, self.state.config_version = "cache", stored.version
        logger.warning("rr: control plane %s unreachable (%s); serving the cached configuration version %d", self.url, why, stored.version)
        self._publish()
        return stored

    def _poll(self, loop: asyncio.AbstractEventLoop, install: Callable[[Stored], Awaitable[None]]) -> None:
        retry = 0.5
        with self._client(LONG_POLL + 15) as client:
            while not self._stop.is_set():
                after = self.state.config_version if self.state.source == "control-plane" else -1
                if self._failed_version is not None:
                    after = self._failed_version
                try:
                    envelope = self._fetch(client, after if after is not None else -1, LONG_POLL)
                    retry = 0.5
                except Refused as e:
                    self._refused(e)
                    self._stop.wait(retry)
                    retry = min(retry * 2, MAX_RETRY)
                    continue
                except (httpx.HTTPError, OSError, ValueError, KeyError) as e:
                    self._lost(f"{type(e).__name__}: {e}", config=True)
                    self._stop.wait(retry)
                    retry = min(retry * 2, MAX_RETRY)
                    continue
                if envelope is None:
                    continue
                try:
                    stored = self._open(envelope)
                    asyncio.run_coroutine_threadsafe(install(stored), loop).result()
                except Exception as e:
                    version = envelope.get("version")
                    self._failed_version = version if isinstance(version, int) else None
                    logger.error("rr: configuration version %s from the control plane failed to load, still enforcing version %s: %s", version, self.state.config_version, e)
                    self._stop.wait(retry)
                    continue
                self._failed_version = None
                self._cache(envelope)
                self.state.source, self.state.config_version, self.state.stale_since = "control-plane", stored.version, None
                self._publish()
                self._beat_due = True
                self._wake.set()

    # ------------------------------------------------------------------ reports

    def _report(self, loop: asyncio.AbstractEventLoop) -> None:
        next_beat = 0.0
        retry = 0.5
        with self._client(15) as client:
            while True:
                stopping = self._stop.is_set()
                try:
                    self._send_audit(client)
                    if time.monotonic() >= next_beat or stopping or self._beat_due:
                        self._beat_due = False
                        answer = self._beat(client, leaving=stopping)
                        if not stopping:
                            self._apply_resets(answer, loop)
                            self._send_usage(client, loop)
                        next_beat = time.monotonic() + HEARTBEAT
                    retry = 0.5
                except Refused as e:
                    self._refused(e)
                except (httpx.HTTPError, OSError, ValueError) as e:
                    self._lost(f"{type(e).__name__}: {e}")
                    retry = min(retry * 2, MAX_RETRY)
                if stopping:
                    return
                self._wake.wait(retry if not self.state.connected else 0.5)
                self._wake.clear()

    def _send_audit(self, client: httpx.Client) -> None:
        while True:
            batch = spool.oldest(self.spool, SEND_BATCH)
            self.state.undelivered_audit = len(batch) if len(batch) < SEND_BATCH else spool.pending(self.spool)
            AUDIT_UNSENT.set(self.state.undelivered_audit)
            if not batch:
                return
            self._call(client, "POST", "/v1/audit", json={"records": batch})
            spool.delivered(self.spool, [r["id"] for r in batch])  # only after the control plane acknowledged them

    def _beat(self, client: httpx.Client, *, leaving: bool = False) -> dict:
        from rr_addon.store.dataplanes import _rr_version

        body = {
            "id": self.plane_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "listen": self.listen,
            "started_at": self.started_at.isoformat(),
            "config_version": self.state.config_version,
            "rr_version": _rr_version(),
            "stats": {**self.stats(), "hybrid": self.state.as_json()},
            "leaving": leaving,
            "usage_reset": self.state.usage_reset,
        }
        answer = self._call(client, "POST", "/v1/heartbeat", json=body).json()
        return answer if isinstance(answer, dict) else {}

    def _apply_resets(self, answer: dict, loop: asyncio.AbstractEventLoop) -> None:
        """`rr usage reset` on the control plane reaches this data plane's counters
        (each reset once per counter backend: rr_addon.hybrid.resets)."""
        pending = answer.get("usage_resets")
        if not pending or self.apply_resets is None:
            return
        try:
            last = asyncio.run_coroutine_threadsafe(self.apply_resets(pending), loop).result(30)
        except Exception as e:  # the counters are unreachable: the next heartbeat asks again
            logger.warning("rr: cannot apply the control plane's usage reset yet: %s", e)
            return
        if last is not None:
            self.state.usage_reset = last
            self._publish()

    def _send_usage(self, client: httpx.Client, loop: asyncio.AbstractEventLoop) -> None:
        if self.counters is None:
            return
        try:
            counts = asyncio.run_coroutine_threadsafe(self.counters(), loop).result(10)  # type: ignore[arg-type]
        except Exception as e:
            logger.debug("rr: cannot read counters to report: %s", e)
            return
        expires = int(time.time()) + 35 * 86400  # a month window at most; the control plane prunes after
        self._call(client, "POST", "/v1/usage", json={"id": self.plane_id, "scope": self.scope, "counters": {k: [v, expires] for k, v in counts.items()}})

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def start(self, install: Callable[[Stored], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        for name, target, args in (("rr-cp-config", self._poll, (loop, install)), ("rr-cp-report", self._report, (loop,))):
            t = threading.Thread(target=target, args=args, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling; one last delivery of the spool and a goodbye heartbeat (what is not delivered stays spooled)."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout if t.name == "rr-cp-report" else 0.1)
        self._threads = []
        self.spool.dispose()
