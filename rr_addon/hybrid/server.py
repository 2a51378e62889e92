"""`rr control-plane serve`: the configuration, sealed per data plane, over
HTTPS with mutual TLS; heartbeats, audit records and usage coming back; the
admin API behind `--server URL`.

Standard library only (`http.server` threads + `ssl`): a few hundred data
planes each holding one long poll are a few hundred mostly idle threads. The
TLS handshake runs in the connection's thread, so a slow client never holds
up `accept`.

Who may call what:
- data-plane endpoints (`/v1/config`, `/v1/heartbeat`, `/v1/audit`, `/v1/usage`,
  `/v1/approvals…`: rr_addon.hybrid.approvals) need a client certificate the control plane's CA signed whose SHA-256
  fingerprint is registered for a data plane that is not revoked (checked on
  every request, and again while a long poll waits);
- admin endpoints (`/v1/admin/…`) need `Authorization: Bearer <admin token>`
  (`rr control-plane issue-admin NAME`).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from sqlalchemy import delete
from sqlalchemy.engine import Engine

from rr_addon.crypto import Keyring
from rr_addon.hybrid import approvals, payload, pki, registry, sealing
from rr_addon.store import audit_store, config_store, dataplanes

logger = logging.getLogger("rr.controlplane")

MAX_BODY = 16 * 1024 * 1024
LONG_POLL_MAX = 60.0
HANDSHAKE_TIMEOUT = 10.0
_SHARED_SCOPE = re.compile(r"redis:[0-9a-f]{16}")  # data planes sharing one Redis (rr_addon.hybrid.dataplane)
MAX_CONNECTIONS = 1024  # each data plane holds about two


class _Refusal(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ControlPlane:
    """The state every request thread shares: the database, keys, and the
    configuration version (watched by one thread that wakes long polls)."""

    def __init__(self, engine: Engine, keyring: Keyring, *, interval: float = 0.5):
        self.engine = engine
        self.keyring = keyring
        self.keys = registry.keys(engine, keyring)
        self.interval = interval
        self.version = config_store.current_version(engine)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._sealed_for: dict[tuple[str, int], dict] = {}
        self._document: tuple[int, bytes] | None = None
        self._lock = threading.Lock()
        self.admin_handlers: dict[tuple[str, str], Callable[[ControlPlane, Any, dict], Any]] = {}
        self._watcher = threading.Thread(target=self._watch, name="rr-cp-version", daemon=True)

    def start(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    def _watch(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                v = config_store.current_version(self.engine)
                failing = False
            except Exception as e:
                if not failing:
                    logger.warning("rr control plane: cannot read the configuration version (%s); retrying", e)
                failing = True
                continue
            if v != self.version:
                with self._changed:
                    self.version = v
                    self._changed.notify_all()
                logger.info("rr control plane: configuration version %d", v)

    def wait_for_change(self, after: int, timeout: float, still_allowed: Callable[[], bool]) -> bool:
        """True once the version differs from `after`; False after `timeout` s.
        Raises _Refusal if the caller is revoked meanwhile."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.version == after:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._changed.wait(min(left, 1.0))
                if not still_allowed():
                    raise _Refusal(403, "this data plane has been revoked")
        return True

    def sealed(self, member: registry.Member) -> dict:
        """The current configuration sealed for `member` (cached per version)."""
        with self._lock:
            doc = self._document
        if doc is None or doc[0] != self.version:
            stored = config_store.read(self.engine, self.keyring)  # StoredConfigError: answered 503
            config_store.snapshot_of(stored, self.keyring)  # what does not compile is never sent
            doc = (stored.version, payload.document(stored, self.keyring))
            with self._lock:
                self._document = doc
                self._sealed_for = {k: v for k, v in self._sealed_for.items() if k[1] == doc[0]}
        key = (member.name, doc[0])
        with self._lock:
            env = self._sealed_for.get(key)
        if env is None:
            env = sealing.seal(doc[1], name=member.name, version=doc[0], recipient=X25519PublicKey.from_public_bytes(member.seal_public), signer=self.keys.signer)
            with self._lock:
                self._sealed_for[key] = env
        return env


# ---------------------------------------------------------------------------
# Requests


def _utc(text: str | None) -> datetime:
    try:
        value = datetime.fromisoformat(text) if text else datetime.now(timezone.utc)
    except ValueError:
        value = datetime.now(timezone.utc)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rr-control-plane"
    sys_version = ""
    server: Server

    def log_message(self, fmt: str, *args: Any) -> None:
        logger.debug("%s %s", self.client_address[0], fmt % args)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        deadline = getattr(_connection, "deadline", None)
        if ok and deadline is not None and deadline.is_alive():  # the head arrived in time
            deadline.cancel()
            self.connection.settimeout(LONG_POLL_MAX + 30)
        return ok

    # -- plumbing

    def _send(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body, separators=(",", ":"), default=str).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _body(self) -> Any:
        self._body_read = True
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _Refusal(400, "bad Content-Length") from None
        if n > MAX_BODY:
            raise _Refusal(413, f"request body over {MAX_BODY} bytes")
        data = self.rfile.read(n)
        if not data:
            return {}
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's parser goes
            raise _Refusal(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "the request body must be a JSON object")
        return body

    def _member(self) -> registry.Member:
        der = self.connection.getpeercert(binary_form=True) if isinstance(self.connection, ssl.SSLSocket) else None
        if not der:
            raise _Refusal(401, "a data-plane client certificate is required")
        member = registry.by_fingerprint(self.server.cp.engine, pki.fingerprint(der))
        if member is None:
            raise _Refusal(403, "this client certificate belongs to no issued data plane (re-issued or never issued)")
        if member.revoked:
            raise _Refusal(403, f"data plane {member.name} has been revoked")
        return member

    def _admin(self) -> str:
        auth = self.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refusal(401, "an admin token is required (Authorization: Bearer …; `rr control-plane issue-admin NAME`)")
        name = registry.admin_for(self.server.cp.engine, token.strip())
        if name is None:
            raise _Refusal(403, "this admin token is unknown or revoked")
        return name

    def _drain(self) -> None:
        """A refused request's body is read anyway: closing a TLS connection with
        unread input resets it, and the client would lose the answer."""
        if getattr(self, "_body_read", False):
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if 0 < n <= MAX_BODY:
            self.rfile.read(n)
        elif n:
            self.close_connection = True

    def _dispatch(self, method: str) -> None:
        self._body_read = False
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path.startswith("/v1/admin/"):
                fn = self.server.cp.admin_handlers.get((method, url.path))
                if fn is None:
                    raise _Refusal(404, f"no admin endpoint {method} {url.path}")
                admin = self._admin()
                body = self._body() if method == "POST" else None
                result = fn(self.server.cp, {"admin": admin, "query": query, "body": body}, {})
                self._send(200, result)
                return
            route = {
                ("GET", "/v1/config"): self._config,
                ("POST", "/v1/heartbeat"): self._heartbeat,
                ("POST", "/v1/audit"): self._audit,
                ("POST", "/v1/usage"): self._usage,
                ("POST", "/v1/approvals"): self._hold,
                ("POST", "/v1/approvals/decisions"): self._held,
                ("POST", "/v1/approvals/close"): self._held,
                ("POST", "/v1/approvals/abandon"): self._held,
            }.get((method, url.path))
            if route is None:
                raise _Refusal(404, f"no endpoint {method} {url.path}")
            route(self._member(), query)
        except _Refusal as r:
            self._drain()
            if r.status in (401, 403):
                self.close_connection = True  # nobody keeps a connection (a slot) without a credential
            self._send(r.status, {"error": r.message})
        except config_store.StoredConfigError as e:
            self._send(503, {"error": f"the stored configuration does not load: {e}"})
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # a field of the wrong shape
            self._send(400, {"error": f"bad request: {type(e).__name__}: {e}"})
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as e:
            logger.exception("rr control plane: internal error on %s %s", method, url.path)
            self._send(500, {"error": f"internal error: {type(e).__name__}"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- data-plane endpoints

    def _config(self, member: registry.Member, query: dict) -> None:
        cp = self.server.cp
        after = int(query.get("after", "-1"))
        wait = min(max(float(query.get("wait", "0")), 0.0), LONG_POLL_MAX)

        def still_allowed() -> bool:
            again = registry.by_fingerprint(cp.engine, pki.fingerprint(self.connection.getpeercert(binary_form=True)))
            return again is not None and not again.revoked

        if cp.version == after and not cp.wait_for_change(after, wait, still_allowed):
            self._send(204)
            return
        self._send(200, {"envelope": cp.sealed(member)})

    def _plane_id(self, member: registry.Member, instance: Any) -> str:
        """What a data plane reports is named after the certificate that delivered it:
        NAME/instance, one '/' only, so no claimed instance reads as another data plane's."""
        return f"{member.name}/{str(instance or '-')[:200].replace('/', '-')}"

    def _heartbeat(self, member: registry.Member, _query: dict) -> None:
        b = self._body()
        now = datetime.now(timezone.utc)
        row = dict(
            id=self._plane_id(member, b.get("id")),
            hostname=str(b.get("hostname") or "?")[:255],
            pid=int(b.get("pid") or 0),
            listen=b.get("listen"),
            started_at=_utc(b.get("started_at")),
            heartbeat_at=now,
            config_version=b.get("config_version"),
            rr_version=b.get("rr_version"),
            stats=b.get("stats") if isinstance(b.get("stats"), dict) else None,
        )
        with self.server.cp.engine.begin() as conn:
            conn.execute(delete(dataplanes.TABLE).where(dataplanes.TABLE.c.id == row["id"]))
            if not b.get("leaving"):
                conn.execute(dataplanes.TABLE.insert(), [row])
        dataplanes.forget_silent(self.server.cp.engine)
        after = b.get("usage_reset")  # the last usage reset this data plane handled (None: since it started)
        resets = registry.resets_after(self.server.cp.engine, int(after) if after is not None else None)
        self._send(200, {"config_version": self.server.cp.version, "usage_resets": resets})

    def _audit(self, member: registry.Member, _query: dict) -> None:
        records = self._body().get("records")
        if not isinstance(records, list):
            raise _Refusal(400, "expected {\"records\": [...]}")
        rows = []
        for r in records:
            if not isinstance(r, dict) or not r.get("request_id"):
                raise _Refusal(400, "every record needs a request_id")
            r = {k: v for k, v in r.items() if k != "id"}
            r["dataplane"] = self._plane_id(member, r.get("dataplane"))
            rows.append(audit_store.row_from_record(r))
        audit_store.insert_rows(self.server.cp.engine, rows)  # a request id already stored is skipped: resending is safe
        self._send(200, {"accepted": len(rows)})

    def _usage(self, member: registry.Member, _query: dict) -> None:
        b = self._body()
        scope = str(b.get("scope") or f"dataplane:{member.name}")
        if scope != f"dataplane:{member.name}" and not _SHARED_SCOPE.fullmatch(scope):
            # counters are stored per scope (last report wins): another data plane's scope is not this one's to overwrite
            raise _Refusal(403, f"data plane {member.name} reports usage for scope dataplane:{member.name} or a shared redis:<hash> scope, not {scope[:80]!r}")
        counters = {str(k)[:255]: (int(v[0]), int(v[1])) for k, v in (b.get("counters") or {}).items()}
        registry.report_usage(self.server.cp.engine, scope, self._plane_id(member, b.get("id")), counters)
        self._send(200, {"stored": len(counters)})


    def _hold(self, member: registry.Member, _query: dict) -> None:
        b = self._body()
        try:
            instance = self._plane_id(member, b.get("instance")).split("/", 1)[1]  # one '/' only, as for everything a data plane reports
            self._send(200, approvals.create(self.server.cp.engine, member.name, instance, b))
        except approvals.HoldRefused as e:
            raise _Refusal(409, str(e)) from None

    def _held(self, member: registry.Member, _query: dict) -> None:
        """Decisions, closing and abandoning: only this data plane's own holds."""
        b = self._body()
        fn = {"decisions": approvals.decisions, "close": approvals.close, "abandon": approvals.abandon}[self.path.split("?")[0].rsplit("/", 1)[1]]
        self._send(200, fn(self.server.cp.engine, member.name, b))


_connection = threading.local()  # the connection this thread serves (one thread per connection)


def _cut(tls: ssl.SSLSocket) -> None:
    """End a connection whose request head is late (from the deadline's timer thread)."""
    try:
        socket.socket.shutdown(tls, socket.SHUT_RDWR)  # the plain socket's: leaves the TLS object to its thread
    except OSError:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], cp: ControlPlane, context: ssl.SSLContext, max_connections: int = MAX_CONNECTIONS):
        self.cp = cp
        self.context = context
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection, at most `max_connections`: more are closed at once
        (connecting is free to anyone who reaches the port, before any certificate)."""
        if not self._slots.acquire(blocking=False):
            logger.warning("rr control plane: %d connections open; closing one from %s", MAX_CONNECTIONS, client_address[0])
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            logger.info("rr control plane: TLS handshake with %s failed: %s", client_address[0], e)
            return
        # The first request's line and headers must arrive within HANDSHAKE_TIMEOUT in all (not per
        # read: a drip of one byte at a time would hold the slot); then reads may wait out a long poll.
        tls.settimeout(HANDSHAKE_TIMEOUT)
        deadline = threading.Timer(HANDSHAKE_TIMEOUT, _cut, [tls])
        deadline.daemon = True
        _connection.deadline = deadline
        deadline.start()
        try:
            super().finish_request(tls, client_address)
        finally:
            deadline.cancel()
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("rr control plane: connection from %s ended with an error", client_address[0], exc_info=True)


def server_context(keys: registry.Keys, names: list[str]) -> ssl.SSLContext:
    cert, key = keys.ca.server(names)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=keys.ca_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_OPTIONAL  # data planes present a certificate; admins a token
    pki.load_chain(ctx, cert, key)
    return ctx


def default_names(host: str) -> list[str]:
    names = [host] if host not in ("", "0.0.0.0", "::") else []
    for n in ("localhost", "127.0.0.1", "::1", socket.gethostname()):
        if n not in names:
            names.append(n)
    return names


def serve(engine: Engine, keyring: Keyring, host: str, port: int, names: list[str], *, ready: Callable[[int], None] | None = None,
          handlers: dict | None = None) -> None:
    """Serve until SIGINT/SIGTERM (KeyboardInterrupt / SystemExit). `handlers`: more
    admin endpoints, from the layers above (rr_addon.cli.served)."""
    from rr_addon.hybrid import admin_api

    cp = ControlPlane(engine, keyring)
    admin_api.install(cp)
    cp.admin_handlers.update(handlers or {})
    server = Server((host, port), cp, server_context(cp.keys, names))
    cp.start()
    if ready is not None:
        ready(server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        cp.stop()
        server.server_close()
