"""Prometheus metrics for one rr process, and the HTTP exporter that serves them.

The addon calls the module-level functions on the request path; each is a
dict lookup plus a locked add (about a microsecond, see tests/controlplane).
The exporter is prometheus_client's own HTTP server on a daemon thread: a
scrape renders the registry there, never on mitmproxy's event loop. Every
`rr run` process has its own registry and port (`rr_metrics_port`);
Prometheus scrapes each instance and sums.

    metrics.request_done("billing", "stripe", None, 0.00012, result="allow", total_seconds=0.08)
    metrics.meter_used("billing", "requests", 1)
    metrics.backend_error("redis", "check_and_add")
    metrics.config_reload(True, version=7)
    exporter = metrics.serve(9101, "127.0.0.1"); ...; exporter.close()

Label values are bounded by the configuration (proxy, target, meter names;
the fixed rr codes): never a caller credential, host or path.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest, start_http_server

logger = logging.getLogger("rr")

NONE = "none"  # label value for "no proxy / target / code"
DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _AuditCollector:
    """Reads the audit writer's and database sink's counters at scrape time (nothing per request)."""

    def __init__(self) -> None:
        self.writer: Any = None
        self.sink: Any = None

    def describe(self) -> list:
        return []

    def collect(self):
        dropped = CounterMetricFamily("rr_audit_dropped", "Audit records lost, by where (queue: writer queue full; database: sink buffer full without a spill file, or unwritable at shutdown).", labels=["stage"])
        pending = GaugeMetricFamily("rr_audit_pending", "Audit records accepted but not yet written, by stage.", labels=["stage"])
        written = CounterMetricFamily("rr_audit_written", "Audit records handed to the sinks (queue) or stored in the database (database).", labels=["stage"])
        w, s = self.writer, self.sink
        if w is not None:
            dropped.add_metric(["queue"], w.dropped)
            written.add_metric(["queue"], w.written)
            pending.add_metric(["queue"], w.qsize())
        if s is not None:
            dropped.add_metric(["database"], s.dropped)
            written.add_metric(["database"], s.written)
            pending.add_metric(["database"], s.pending)
        yield dropped
        yield written
        yield pending
        if s is not None:
            yield CounterMetricFamily("rr_audit_spilled", "Audit records written to the spill file instead of the database.", value=s.spilled)
            yield CounterMetricFamily("rr_audit_rejected", "Audit records the database refused (logged by request id).", value=s.rejected)
            yield CounterMetricFamily("rr_audit_database_failures", "Failed audit insert attempts (each retried).", value=s.failures)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # CPU, memory, open files of this process
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "rr_requests", "Requests rr finished, by proxy, target, rr code and result.", ["proxy", "target", "code", "result"], registry=r
        )
        self.decision = Histogram("rr_decision_seconds", "Time rr spent deciding a request.", buckets=DECISION_BUCKETS, registry=r)
        self.request_seconds = Histogram(
            "rr_request_seconds", "Time from request headers to the end of the response.", buckets=REQUEST_BUCKETS, registry=r
        )
        self.meter_usage = Counter("rr_meter_usage", "Amount added to meters (requests, tokens…), by proxy and meter.", ["proxy", "meter"], registry=r)
        self.meter_refusals = Counter("rr_meter_refusals", "Requests refused by a meter's limit (429), by proxy and meter.", ["proxy", "meter"], registry=r)
        self.backend_errors = Counter(
            "rr_backend_errors", "Errors talking to a backend (database, redis, idp, audit…), by backend and operation.", ["backend", "operation"], registry=r
        )
        self.degraded = Counter(
            "rr_degraded_decisions",
            "Requests decided by a meter's on_backend_error policy because the counters were unreachable, by proxy and result (allow | deny).",
            ["proxy", "result"],
            registry=r,
        )
        self.reloads = Counter("rr_config_reloads", "Configuration reloads, by result (ok | failed).", ["result"], registry=r)
        self.secret_errors = Counter(
            "rr_secret_source_errors",
            "Failed reads of a watched secret source (counted every poll while failing; the last good value is used), by target and credential.",
            ["target", "credential"],
            registry=r,
        )
        self.secret_readable = Gauge(
            "rr_secret_source_readable", "1 if the watched secret source was readable at the last poll, else 0.", ["target", "credential"], registry=r
        )
        self.config_version = Gauge("rr_config_version", "The configuration version this process enforces.", registry=r)
        self.audit = _AuditCollector()
        r.register(self.audit)
        self._requests: dict[tuple, Any] = {}
        self._meters: dict[tuple, Any] = {}
        self._refusals: dict[tuple, Any] = {}
        self._observe_decision = self.decision.observe
        self._observe_request = self.request_seconds.observe

    # ------------------------------------------------------------ request path

    def request_done(
        self,
        proxy: str | None,
        target: str | None,
        code: str | None,
        decision_seconds: float | None,
        result: str = "allow",
        total_seconds: float | None = None,
    ) -> None:
        key = (proxy, target, code, result)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(proxy or NONE, target or NONE, code or NONE, result)
        child.inc()
        if decision_seconds is not None:
            self._observe_decision(decision_seconds)
        if total_seconds is not None:
            self._observe_request(total_seconds)

    def meter_used(self, proxy: str, meter: str, amount: float = 1) -> None:
        key = (proxy, meter)
        child = self._meters.get(key)
        if child is None:
            child = self._meters[key] = self.meter_usage.labels(proxy, meter)
        child.inc(amount)

    def meter_refused(self, proxy: str, meter: str) -> None:
        key = (proxy, meter)
        child = self._refusals.get(key)
        if child is None:
            child = self._refusals[key] = self.meter_refusals.labels(proxy, meter)
        child.inc()

    # ------------------------------------------------------------ rare events

    def backend_error(self, backend: str, operation: str) -> None:
        self.backend_errors.labels(backend, operation).inc()

    def degraded_decision(self, proxy: str, allowed: bool) -> None:
        self.degraded.labels(proxy, "allow" if allowed else "deny").inc()

    def config_reload(self, ok: bool, version: int | None = None) -> None:
        self.reloads.labels("ok" if ok else "failed").inc()
        if ok and version is not None:
            self.config_version.set(version)

    def secret_source(self, target: str, credential: str, readable: bool) -> None:
        self.secret_readable.labels(target, credential).set(1 if readable else 0)
        if not readable:
            self.secret_errors.labels(target, credential).inc()

    def config_loaded(self, version: int) -> None:
        """The version enforced at startup (not counted as a reload)."""
        self.config_version.set(version)

    def watch_audit(self, writer: Any = None, sink: Any = None) -> None:
        """Report an `audit.writer.AuditWriter` and a `DatabaseSink` (replaces earlier ones; None forgets)."""
        self.audit.writer, self.audit.sink = writer, sink

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Exporter:
    """prometheus_client's HTTP server on a daemon thread; `port` is the bound port (0 picks one)."""

    def __init__(self, port: int, host: str = "127.0.0.1", metrics: Metrics | None = None):
        self._server, self._thread = start_http_server(port, host, registry=(metrics or METRICS).registry)
        self.host = host
        self.port = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


METRICS = Metrics()

request_done: Callable[..., None] = METRICS.request_done
meter_used = METRICS.meter_used
meter_refused = METRICS.meter_refused
backend_error = METRICS.backend_error
degraded_decision = METRICS.degraded_decision
config_reload = METRICS.config_reload
secret_source = METRICS.secret_source
config_loaded = METRICS.config_loaded
watch_audit = METRICS.watch_audit


def serve(port: int, host: str = "127.0.0.1") -> Exporter:
    """Serve /metrics of this process on host:port; OSError if the port is taken."""
    exporter = Exporter(port, host)
    logger.info("rr: Prometheus metrics on http://%s:%d/metrics", host, exporter.port)
    return exporter
