"""Prometheus metrics: what the addon records, what a scrape shows, and what a call costs."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rr_addon import metrics
from rr_addon.audit.writer import AuditWriter


def samples(m: metrics.Metrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_requests_by_proxy_target_code_and_result():
    m = metrics.Metrics()
    m.request_done("billing", "stripe", None, 0.0002)
    m.request_done("billing", "stripe", None, 0.0003, total_seconds=0.08)
    m.request_done("billing", "stripe", "access-denied", 0.0001, result="deny")
    m.request_done(None, None, "unauthenticated", 0.00005, result="deny")
    s = samples(m)

    def req(proxy, target, code, result):
        return s[("rr_requests_total", (("code", code), ("proxy", proxy), ("result", result), ("target", target)))]

    assert req("billing", "stripe", "none", "allow") == 2
    assert req("billing", "stripe", "access-denied", "deny") == 1
    assert req("none", "none", "unauthenticated", "deny") == 1
    assert s[("rr_decision_seconds_count", ())] == 4
    assert s[("rr_decision_seconds_sum", ())] == pytest.approx(0.00065)
    assert s[("rr_decision_seconds_bucket", (("le", "0.0001"),))] == 2
    assert s[("rr_request_seconds_count", ())] == 1


def test_meters_backends_and_reloads():
    m = metrics.Metrics()
    m.meter_used("billing", "tokens", 120)
    m.meter_used("billing", "tokens", 30)
    m.meter_refused("billing", "requests")
    m.backend_error("redis", "check_and_add")
    m.config_loaded(3)
    m.config_reload(True, version=4)
    m.config_reload(False)
    s = samples(m)
    assert s[("rr_meter_usage_total", (("meter", "tokens"), ("proxy", "billing")))] == 150
    assert s[("rr_meter_refusals_total", (("meter", "requests"), ("proxy", "billing")))] == 1
    assert s[("rr_backend_errors_total", (("backend", "redis"), ("operation", "check_and_add")))] == 1
    assert s[("rr_config_reloads_total", (("result", "ok"),))] == 1
    assert s[("rr_config_reloads_total", (("result", "failed"),))] == 1
    assert s[("rr_config_version", ())] == 4
    assert ("process_resident_memory_bytes", ()) in s  # the process itself: CPU, memory, open files


def test_audit_counters_are_read_at_scrape_time():
    class Sink:
        written, dropped, spilled, rejected, failures, pending = 7, 1, 2, 3, 4, 5

        def write(self, records):
            pass

        def close(self):
            pass

    m = metrics.Metrics()
    writer = AuditWriter([Sink()], maxsize=1)
    writer.dropped = 9
    m.watch_audit(writer, Sink())
    s = samples(m)
    writer.close()
    assert s[("rr_audit_dropped_total", (("stage", "queue"),))] == 9
    assert s[("rr_audit_dropped_total", (("stage", "database"),))] == 1
    assert s[("rr_audit_written_total", (("stage", "database"),))] == 7
    assert s[("rr_audit_pending", (("stage", "database"),))] == 5
    assert s[("rr_audit_spilled_total", ())] == 2
    assert s[("rr_audit_rejected_total", ())] == 3
    m.watch_audit(None, None)
    assert not any(k[0].startswith("rr_audit_spilled") for k in samples(m))


def test_the_exporter_serves_metrics_over_http_and_frees_its_port():
    m = metrics.Metrics()
    m.request_done("billing", "stripe", None, 0.0001)
    exporter = metrics.Exporter(0, "127.0.0.1", m)
    try:
        r = httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert 'rr_requests_total{code="none",proxy="billing",result="allow",target="stripe"} 1.0' in r.text
    finally:
        exporter.close()
    metrics.Exporter(exporter.port, "127.0.0.1", m).close()  # closed: the port can be served again (an option change)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5)


def test_a_taken_port_is_an_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            metrics.Exporter(s.getsockname()[1], "127.0.0.1", metrics.Metrics())


def test_module_functions_record_on_the_process_registry():
    before = samples(metrics.METRICS).get(("rr_backend_errors_total", (("backend", "test"), ("operation", "module"))), 0)
    metrics.backend_error("test", "module")
    assert samples(metrics.METRICS)[("rr_backend_errors_total", (("backend", "test"), ("operation", "module")))] == before + 1
