from datetime import datetime
from decimal import Decimal

import pytest

from rr_addon.policy.meters_schema import MeterSpec
from rr_addon.policy.bodies import parse_json
from rr_addon.core.quota import CheckResult, ProxyMeters, compile_meters, number
from rr_addon.core import reasons


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


NOW = at("2026-11-28T14:05:30+00:00")  # 30 s left in the minute, 54:30 in the hour


class Counts:
    """A reference backend: the semantics every CounterBackend implements."""

    def __init__(self):
        self.c: dict[str, int] = {}

    def check_and_add(self, ops):
        values = tuple(self.c.get(op.key, 0) for op in ops)
        refused = tuple(
            i for i, (op, v) in enumerate(zip(ops, values)) if op.limit is not None and (v >= op.limit or v + op.amount > op.limit)
        )
        if refused:
            return CheckResult(False, values, refused)
        self.add(ops)
        return CheckResult(True, tuple(self.c.get(op.key, 0) for op in ops))

    def add(self, ops):
        for op in ops:
            if op.amount:
                self.c[op.key] = self.c.get(op.key, 0) + op.amount


def meters(*specs, when_compiler=None, proxy="agent"):
    return ProxyMeters(proxy, compile_meters([MeterSpec.model_validate(s) for s in specs], when_compiler))


def run(pm, counts, credential="c1", request=None, now=NOW):
    plan = pm.plan(credential, request, now)
    return plan, plan.verdict(counts.check_and_add(plan.ops))


def test_keys_usage_and_subjects():
    pm = meters({"name": "requests", "limits": {"minute": 2}}, {"name": "mine", "per": "credential"})
    plan = pm.plan("c1", None, NOW)
    assert [op.key for op in plan.ops] == [
        "usage:agent:c1:minute:2026-11-28T14:05+00:00",
        "usage:agent:c1:hour:2026-11-28T14:00+00:00",
        "usage:agent:c1:day:2026-11-28",
        "usage:agent:c1:month:2026-11",
        "meter:agent:requests:-:minute:2026-11-28T14:05+00:00",
        "meter:agent:requests:-:hour:2026-11-28T14:00+00:00",
        "meter:agent:requests:-:day:2026-11-28",
        "meter:agent:requests:-:month:2026-11",
        "meter:agent:mine:c1:minute:2026-11-28T14:05+00:00",
        "meter:agent:mine:c1:hour:2026-11-28T14:00+00:00",
        "meter:agent:mine:c1:day:2026-11-28",
        "meter:agent:mine:c1:month:2026-11",
    ]
    assert [op.limit for op in plan.ops] == [None] * 4 + [2, None, None, None] + [None] * 4
    assert all(op.amount == 1 for op in plan.ops)
    assert {op.meter for op in plan.ops} == {None, "requests", "mine"}


def test_usage_is_kept_without_meters_and_never_refuses():
    pm, counts = meters(), Counts()
    for _ in range(5):
        plan, v = run(pm, counts)
        assert v.admitted and v.policy is None and v.ratelimit is None
    assert counts.c["usage:agent:c1:day:2026-11-28"] == 5
    assert not plan.limited and plan.meters == ()


def test_meter_windows_follow_its_timezone():
    pm = meters({"name": "r", "timezone": "America/New_York"})
    keys = [op.key for op in pm.plan("c1", None, NOW).ops]
    assert "usage:agent:c1:day:2026-11-28" in keys
    assert "meter:agent:r:-:hour:2026-11-28T09:00-05:00" in keys


def test_refused_request_increments_nothing_across_meters_and_windows():
    pm = meters(
        {"name": "a", "limits": {"minute": 100, "hour": 3, "day": 100}},
        {"name": "b", "per": "credential", "limits": {"minute": 5, "month": 100}},
        {"name": "track"},
    )
    counts = Counts()
    for _ in range(3):
        assert run(pm, counts)[1].admitted
    before = dict(counts.c)
    plan, v = run(pm, counts)
    assert not v.admitted and v.reason == reasons.QUOTA_EXCEEDED
    assert v.exhausted == (("a", "hour"),)
    assert counts.c == before  # not the usage, not b, not the track-only meter, not a's other windows
    assert counts.c["usage:agent:c1:month:2026-11"] == 3


def test_retry_after_is_the_earliest_exhausted_window_and_wait_the_latest():
    pm = meters({"name": "a", "limits": {"minute": 1, "hour": 1}}, {"name": "b", "limits": {"day": 1}})
    counts = Counts()
    assert run(pm, counts)[1].admitted
    _, v = run(pm, counts)
    assert set(v.exhausted) == {("a", "minute"), ("a", "hour"), ("b", "day")}
    assert v.retry_after == 30  # the minute resets first (docs/policy.md: meters)
    assert v.wait == 9 * 3600 + 54 * 60 + 30  # only at midnight can a retry succeed


def test_retry_after_rounds_up_to_whole_seconds():
    pm, counts = meters({"name": "a", "limits": {"minute": 1}}), Counts()
    now = at("2026-11-28T14:05:59.4+00:00")
    run(pm, counts, now=now)
    assert run(pm, counts, now=now)[1].retry_after == 1
    assert run(pm, counts, now=now - 29)[1].retry_after == 30


def test_ratelimit_headers_report_the_window_with_least_remaining():
    pm = meters(
        {"name": "requests", "limits": {"minute": 60, "hour": 1000, "day": 5}},
        {"name": "tracked"},
        {"name": "hourly", "per": "credential", "limits": {"hour": 10}},
    )
    counts = Counts()
    _, v = run(pm, counts)
    assert v.policy == '"requests";q=5;w=86400, "hourly";q=10;w=3600'
    assert v.ratelimit == '"requests";r=4;t=35670, "hourly";r=9;t=3270'
    counts.c["meter:agent:requests:-:minute:2026-11-28T14:05+00:00"] = 58
    _, v = run(pm, counts)
    assert v.policy == '"requests";q=60;w=60, "hourly";q=10;w=3600'
    assert v.ratelimit == '"requests";r=1;t=30, "hourly";r=8;t=3270'


def test_ratelimit_tie_reports_the_window_that_resets_last():
    pm, counts = meters({"name": "r", "limits": {"minute": 1, "month": 1}}), Counts()
    _, v = run(pm, counts)
    assert v.policy == '"r";q=1;w=2592000'
    assert v.ratelimit == '"r";r=0;t=' + str(int(at("2026-12-01T00:00:00+00:00") - NOW))
    _, refused = run(pm, counts)
    assert refused.ratelimit == v.ratelimit and not refused.admitted


def test_when_predicate_selects_meters():
    seen = []

    def compile_when(spec):
        seen.append(spec.methods)
        return lambda request: request["method"] in spec.methods

    pm = meters({"name": "posts", "limits": {"minute": 1}, "when": {"methods": ["POST"]}}, when_compiler=compile_when)
    assert seen == [["POST"]]
    counts = Counts()
    assert run(pm, counts, request={"method": "POST"})[1].admitted
    assert not run(pm, counts, request={"method": "POST"})[1].admitted
    plan, v = run(pm, counts, request={"method": "GET"})
    assert v.admitted and plan.meters == () and v.policy is None


def test_when_without_a_compiler_is_an_error():
    with pytest.raises(ValueError, match="'when' needs a predicate compiler"):
        meters({"name": "posts", "when": {"methods": ["POST"]}})


def test_response_value_admits_while_under_the_limit_then_adds_after_the_response():
    pm = meters({"name": "tokens", "type": "response_value", "response_value": {"json_path": "$.usage.total_tokens"}, "limits": {"day": 100}})
    counts = Counts()
    key = "meter:agent:tokens:-:day:2026-11-28"
    plan, v = run(pm, counts)
    assert v.admitted and plan.needs_response and counts.c.get(key) is None
    assert v.ratelimit == '"tokens";r=100;t=35670'
    counts.add(plan.response_ops({}, b'{"usage": {"total_tokens": 70}}'))
    assert counts.c[key] == 70
    # Two requests in flight while under the limit: both admitted, the total overshoots by one value.
    p1, v1 = run(pm, counts)
    p2, v2 = run(pm, counts)
    assert v1.admitted and v2.admitted
    counts.add(p1.response_ops({}, {"usage": {"total_tokens": 25}}))
    counts.add(p2.response_ops({}, {"usage": {"total_tokens": 25}}))
    assert counts.c[key] == 120
    _, v = run(pm, counts)
    assert not v.admitted and v.ratelimit == '"tokens";r=0;t=35670'


def test_response_ops_touch_every_window_of_the_meter():
    pm = meters({"name": "t", "type": "response_value", "response_value": {"header": "X-Tokens"}, "per": "credential"})
    plan = pm.plan("c1", None, NOW)
    ops = plan.response_ops({"x-tokens": "12"}, None)
    assert [(op.key.split(":", 4)[4], op.amount, op.limit) for op in ops] == [
        ("minute:2026-11-28T14:05+00:00", 12, None),
        ("hour:2026-11-28T14:00+00:00", 12, None),
        ("day:2026-11-28", 12, None),
        ("month:2026-11", 12, None),
    ]
    assert plan.response_ops({}, None) == ()
    assert meters({"name": "r"}).plan("c1", None, NOW).response_ops({"x-tokens": "12"}, None) == ()


@pytest.mark.parametrize(
    "path, body, value",
    [
        ("$.usage.total_tokens", b'{"usage": {"total_tokens": 42}}', 42),
        ("$.usage.total_tokens", '{"usage": {"total_tokens": 4.2}}', 5),  # fractions round up
        ("$.usage.total_tokens", {"usage": {"total_tokens": "17"}}, 17),
        ("$.usage.total_tokens", {"usage": {"total_tokens": -3}}, None),
        ("$.usage.total_tokens", {"usage": {"total_tokens": True}}, None),
        ("$.usage.total_tokens", {"usage": [1]}, None),
        ("$.usage.total_tokens", b"not json", None),
        ("$.usage.total_tokens", None, None),
        ("$.data[0].cost", {"data": [{"cost": 3}, {"cost": 4}]}, 3),
        ("$.data[?(@.kind == 'total')].n", {"data": [{"kind": "part", "n": 1}, {"kind": "total", "n": 9}]}, 9),
        ("$.usage.total_tokens", parse_json(b'{"usage": {"total_tokens": 1.5e1}}'), 15),  # Decimal from core.bodies
    ],
)
def test_response_value_from_json(path, body, value):
    pm = meters({"name": "t", "type": {"response_value": {"json_path": path}}})
    ops = pm.plan("c1", None, NOW).response_ops({}, body)
    assert [op.amount for op in ops] == ([value] * 4 if value else [])


@pytest.mark.parametrize(
    "raw, value",
    [(3, 3), (0, 0), (2.01, 3), (Decimal("2.5"), 3), (Decimal("NaN"), None), (Decimal("-1"), None), ("  12 ", 12), ("1e3", 1000), ("nan", None), ("inf", None), ("x", None), (None, None), (False, None), ([1], None)],
)
def test_number(raw, value):
    assert number(raw) == value


def test_on_backend_error_policies():
    deny = meters({"name": "d", "limits": {"minute": 1}}, {"name": "a", "limits": {"minute": 1}, "on_backend_error": "allow"})
    v = deny.plan("c1", None, NOW).on_backend_error()
    assert (v.admitted, v.reason, v.retry_after, v.degraded) == (False, reasons.METER_BACKEND_DENY, 1, True)
    allow = meters({"name": "a", "limits": {"minute": 1}, "on_backend_error": "allow"}, {"name": "tracked"})
    v = allow.plan("c1", None, NOW).on_backend_error()
    assert (v.admitted, v.reason, v.degraded) == (True, reasons.METER_BACKEND_ALLOW, True)
    # A track-only meter never blocks, whatever its policy says.
    v = meters({"name": "tracked", "on_backend_error": "deny"}).plan("c1", None, NOW).on_backend_error()
    assert v.admitted and v.reason is None


def test_ops_are_reused_within_a_window_and_rebuilt_after():
    pm = meters({"name": "r", "limits": {"minute": 5}})
    first = pm.plan("c1", None, NOW)
    again = pm.plan("c1", None, NOW + 29)
    assert all(a is b for a, b in zip(first.ops, again.ops))
    later = pm.plan("c1", None, NOW + 30)
    assert later.ops[4].key == "meter:agent:r:-:minute:2026-11-28T14:06+00:00"
    assert later.ops[7] == first.ops[7]  # same month counter


def test_usage_rows_for_rr_usage():
    pm = meters({"name": "r", "limits": {"day": 10}}, {"name": "mine", "per": "credential", "limits": {"minute": 2}})
    counts = Counts()
    run(pm, counts, "c1")
    run(pm, counts, "c2")
    rows = pm.usage_rows(["c1", "c2"], counts.c, NOW)
    table = {(r.meter, r.subject, r.window.kind): (r.used, r.limit, r.remaining) for r in rows}
    assert len(rows) == 4 * (2 + 1 + 2)
    assert table[(None, "c1", "month")] == (1, None, None)
    assert table[("r", "-", "day")] == (2, 10, 8)
    assert table[("r", "-", "minute")] == (2, None, None)
    assert table[("mine", "c2", "minute")] == (1, 2, 1)


def test_when_with_the_rules_compiler():
    from rr_addon.core.rules import RuleRequest, compile_when

    def compiler(match):
        scope = compile_when(match)
        return lambda request: scope.evaluate(request).allowed

    pm = meters({"name": "chat", "limits": {"minute": 1}, "when": {"methods": ["POST"], "path": "^/v1/chat/"}}, when_compiler=compiler)
    counts = Counts()
    assert run(pm, counts, request=RuleRequest("POST", "/v1/chat/completions"))[1].admitted
    assert not run(pm, counts, request=RuleRequest("POST", "/v1/chat/completions"))[1].admitted
    plan, v = run(pm, counts, request=RuleRequest("POST", "/v1/embeddings"))
    assert v.admitted and plan.meters == ()
