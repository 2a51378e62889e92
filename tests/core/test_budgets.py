"""Reservations (`reserve:`) and money (`type: cost`) in the pure meter core
(docs/budgets.md): what admission reserves, how settle replaces it, when it is
released, and exact micro-unit prices for OpenAI- and Anthropic-shaped usage."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rr_addon.config.load import ConfigErrors
from rr_addon.policy.meters_schema import MeterSpec
from rr_addon.policy.costs import Price, micro_cost, money
from rr_addon.core.quota import UNPRICED_MODEL, Measurement
from rr_addon.core.rules import RuleRequest
from tests.core.test_meters import NOW, Counts, meters

TOKENS = {"name": "tokens", "type": "response_value", "response_value": {"json_path": "$.usage.total_tokens"}, "reserve": {"json_path": "$.max_tokens", "default": 100}, "limits": {"day": 1000, "month": 5000}}
PRICES = {"gpt-4o-mini": {"input": 0.00015, "output": 0.0006}, "claude-3-5-haiku": {"input": "0.0008", "output": "0.004"}}
OPENAI = {"model": "$.model", "prices": PRICES, "input": "$.usage.prompt_tokens", "output": "$.usage.completion_tokens"}
ANTHROPIC = {"model": "$.model", "prices": PRICES, "input": ["$.usage.input_tokens", "$.message.usage.input_tokens"], "output": "$.usage.output_tokens"}


def req(body, text=None) -> RuleRequest:
    import json

    return RuleRequest("POST", "/v1/chat/completions", body_json=body, body_text=text if text is not None else json.dumps(body))


def day_value(counts: Counts, meter: str = "tokens") -> int:
    return next((v for k, v in counts.c.items() if k.startswith(f"meter:agent:{meter}:") and ":day:" in k), 0)


def test_admission_reserves_max_tokens_in_every_window_and_settle_replaces_it():
    pm, counts = meters(TOKENS), Counts()
    plan = pm.plan("c1", req({"max_tokens": 300}), NOW)
    assert plan.reserved == {"tokens": 300}
    assert [op.amount for op in plan.ops if op.meter == "tokens"] == [300, 300, 300, 300]
    assert plan.verdict(counts.check_and_add(plan.ops)).admitted
    assert day_value(counts) == 300
    counts.add(plan.settle(Measurement({"tokens": 120}, {})))
    assert {k: v for k, v in counts.c.items() if k.startswith("meter:")} == {op.key: 120 for op in plan.ops if op.meter == "tokens"}


def test_a_reservation_that_does_not_fit_refuses_even_under_the_limit():
    pm, counts = meters(TOKENS), Counts()
    first = pm.plan("c1", req({"max_tokens": 900}), NOW)
    assert first.verdict(counts.check_and_add(first.ops)).admitted
    second = pm.plan("c1", req({"max_tokens": 200}), NOW)  # 900 + 200 > 1000: without reserve, 0 < 1000 admitted it
    verdict = second.verdict(counts.check_and_add(second.ops))
    assert not verdict.admitted and verdict.exhausted == (("tokens", "day"),)
    assert day_value(counts) == 900


def test_default_when_the_body_has_no_count_and_request_bytes_when_asked():
    pm = meters(TOKENS)
    for body in ({}, {"max_tokens": "lots"}, {"max_tokens": -5}, {"max_tokens": True}):
        assert pm.plan("c1", req(body), NOW).reserved == {"tokens": 100}, body
    assert pm.plan("c1", None, NOW).reserved == {"tokens": 100}
    with_bytes = meters({**TOKENS, "reserve": {"json_path": ["$.max_completion_tokens", "$.max_tokens"], "default": 100, "add_request_bytes": True}})
    body = {"max_tokens": 10, "messages": [{"content": "x" * 50}]}
    r = req(body)
    assert with_bytes.plan("c1", r, NOW).reserved == {"tokens": 10 + len(r.body_text.encode())}
    # n answers of max_tokens each: n times the reservation; n absent, 0 or nonsense: once
    several = meters({**TOKENS, "reserve": {"json_path": "$.max_tokens", "default": 100, "times": "$.n"}})
    for body, reserved in (({"max_tokens": 50, "n": 8}, 400), ({"max_tokens": 50}, 50), ({"max_tokens": 50, "n": 0}, 50), ({"n": "x"}, 100), ({"n": 3}, 300)):
        assert several.plan("c1", req(body), NOW).reserved == {"tokens": reserved}, body
    # both spellings: the larger is reserved, whichever of them the upstream honours
    for body in ({"max_tokens": 1, "max_completion_tokens": 900}, {"max_tokens": 900, "max_completion_tokens": 1}):
        r = req(body)
        assert with_bytes.plan("c1", r, NOW).reserved == {"tokens": 900 + len(r.body_text.encode())}


@pytest.mark.parametrize(
    "measured, status, policy, charged",
    [
        (Measurement({"tokens": 40}, {}), 200, "charge", 40),  # measured: the value, whatever the reservation
        (Measurement({"tokens": 400}, {}), 200, "charge", 400),  # beyond the reservation: the value still counts
        (Measurement({}, {"tokens": "no-value"}), 200, "charge", 300),  # 2xx without usage: the reservation stays
        (Measurement({}, {"tokens": "no-value"}), 200, "release", 0),
        (Measurement({}, {"tokens": "no-value"}), 500, "charge", 0),  # an upstream failure without usage: released
        (Measurement({}, {"tokens": "no-value"}), 429, "charge", 0),
        (Measurement({"tokens": 7}, {"tokens": "stream-broken"}), 200, "charge", 300),  # broken: at least the reservation
        (Measurement({"tokens": 7}, {"tokens": "stream-broken"}), 200, "release", 7),
        (Measurement({"tokens": 9}, {}), 503, "charge", 9),  # a value measured on an error still counts
        (Measurement({}, {}), None, "charge", 0),  # no response at all
    ],
)
def test_settle_and_release(measured, status, policy, charged):
    pm, counts = meters({**TOKENS, "reserve": {"json_path": "$.max_tokens", "default": 100, "unmeasured": policy}}), Counts()
    plan = pm.plan("c1", req({"max_tokens": 300}), NOW)
    counts.check_and_add(plan.ops)
    counts.add(plan.settle(measured, status))
    assert day_value(counts) == charged
    unmeasured = [v for k, v in counts.c.items() if k.startswith("unmeasured:") and ":day:" in k]
    assert unmeasured == ([1] if measured.unmeasured else [])


def test_release_gives_back_every_reservation_and_refund_too():
    pm, counts = meters(TOKENS, {"name": "calls", "limits": {"day": 5}}), Counts()
    plan = pm.plan("c1", req({"max_tokens": 300}), NOW)
    counts.check_and_add(plan.ops)
    counts.add(plan.release())
    assert day_value(counts) == 0 and day_value(counts, "calls") == 1  # a request_count meter keeps its count
    plan = pm.plan("c1", req({"max_tokens": 300}), NOW)
    counts.check_and_add(plan.ops)
    counts.add(plan.refund())
    assert day_value(counts) == 0 and day_value(counts, "calls") == 1


@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), min_size=1, max_size=40))
def test_interleaved_reservations_never_overrun_when_values_stay_within_them(requests):
    """Any number of requests admitted before any settles: the total never exceeds the
    limit while each measured value is at most its reservation, and ends as the sum of the values."""
    pm, counts = meters(TOKENS), Counts()
    admitted = []
    for reserve, used in requests:
        plan = pm.plan("c1", req({"max_tokens": reserve}), NOW)
        if plan.verdict(counts.check_and_add(plan.ops)).admitted:
            admitted.append((plan, min(used, reserve)))
        assert day_value(counts) <= 1000
    for plan, used in admitted:
        counts.add(plan.settle(Measurement({"tokens": used}, {})))
        assert day_value(counts) <= 1000
    if admitted:
        assert day_value(counts) == sum(u for _, u in admitted)


# ---------------------------------------------------------------------------- money


def test_prices_are_exact_and_round_up_to_a_micro_unit():
    price = Price(Decimal("0.00015"), Decimal("0.0006"))
    assert micro_cost(price, 1000, 1000) == 750  # 0.00015 + 0.0006 = 0.00075 USD
    assert micro_cost(price, 1, 0) == 1  # 0.00000015 USD: rounded up, never down to 0
    assert micro_cost(price, 0, 0) == 0
    assert micro_cost(price, 10**9, 10**9) == 750_000_000
    # a thousand small requests, each rounded up at most once: no float drift
    assert sum(micro_cost(price, 7, 3) for _ in range(1000)) == 1000 * 3  # 7*0.15e-3 + 3*0.6e-3 = 0.00285 µ → 3 µ... per request
    assert money(750, "USD") == "0.00075 USD" and money(250_000_000, "EUR") == "250.00 EUR" and money(0, "USD") == "0.00 USD"


def test_openai_shape_is_priced_by_the_model_the_request_names():
    pm, counts = meters({"name": "spend", "type": "cost", "cost": OPENAI, "limits": {"month": 1}}), Counts()
    plan = pm.plan("c1", req({"model": "gpt-4o-mini"}), NOW)
    assert plan.verdict(counts.check_and_add(plan.ops)).admitted
    body = {"model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 2000, "completion_tokens": 500}}
    measured = plan.measure({}, body)
    assert measured.values == {"spend": 600}  # 2 × 0.15 + 0.5 × 0.6 = 0.6 milli-USD = 600 µUSD
    counts.add(plan.settle(measured))
    assert day_value(counts, "spend") == 600
    rows = [r for r in pm.usage_rows(["c1"], counts.c, NOW) if r.meter == "spend" and r.window.kind == "month"]
    assert (rows[0].used, rows[0].limit, rows[0].currency) == (600, 1_000_000, "USD")


def test_anthropic_shapes_whole_and_streamed():
    pm = meters({"name": "spend", "type": "cost", "cost": ANTHROPIC, "currency": "EUR"})
    plan = pm.plan("c1", req({"model": "claude-3-5-haiku"}), NOW)
    whole = {"model": "claude-3-5-haiku-20241022", "usage": {"input_tokens": 1000, "output_tokens": 250}}
    assert plan.measure({}, whole).values == {"spend": 800 + 1000}
    events = plan.events({}, 1 << 20)
    for event in (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":1000,"output_tokens":1}}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"hi"}}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":250}}\n\n',
    ):
        events(event)
    assert events.result() == Measurement({"spend": 1800}, {})


def test_a_stream_without_both_counts_is_unmeasured():
    pm = meters({"name": "spend", "type": "cost", "cost": OPENAI})
    plan = pm.plan("c1", req({"model": "gpt-4o-mini"}), NOW)
    events = plan.events({}, 1 << 20)
    events(b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\ndata: [DONE]\n\n')  # no include_usage
    assert events.result() == Measurement({}, {"spend": "no-value"})


def test_unknown_model_is_refused_before_counting_unless_a_default_prices_it():
    pm = meters({"name": "spend", "type": "cost", "cost": OPENAI, "limits": {"day": 5}})
    for model in ("gpt-5-ultra", ["gpt-4o-mini"], 4):
        verdict = pm.plan("c1", req({"model": model}), NOW).refusal()
        assert verdict is not None and verdict.code == "unknown-model" and verdict.reason == UNPRICED_MODEL
    assert pm.plan("c1", req({"model": "gpt-4o-mini"}), NOW).refusal() is None
    priced = meters({"name": "spend", "type": "cost", "cost": {**OPENAI, "default": {"input": 0.01, "output": 0.03}}})
    plan = priced.plan("c1", req({"model": "gpt-5-ultra"}), NOW)
    assert plan.refusal() is None
    assert plan.measure({}, {"usage": {"prompt_tokens": 1000, "completion_tokens": 1000}}).values == {"spend": 40_000}


def test_no_model_in_the_request_is_priced_from_the_response_else_at_the_highest_price():
    pm = meters({"name": "spend", "type": "cost", "cost": OPENAI})
    plan = pm.plan("c1", req({"messages": []}), NOW)
    assert plan.refusal() is None
    usage = {"usage": {"prompt_tokens": 1000, "completion_tokens": 1000}}
    assert plan.measure({}, {"model": "gpt-4o-mini", **usage}).values == {"spend": 750}
    assert plan.measure({}, {"model": "unknown", **usage}).values == {"spend": 800 + 4000}  # the dearest input and output


def test_cost_reservation_prices_max_tokens_as_output_and_the_body_as_input():
    pm, counts = meters({"name": "spend", "type": "cost", "cost": OPENAI, "reserve": {"json_path": "$.max_tokens", "default": 1000}, "limits": {"day": 0.01}}), Counts()
    r = req({"model": "gpt-4o-mini", "max_tokens": 10000, "messages": [{"role": "user", "content": "hi"}]})
    plan = pm.plan("c1", r, NOW)
    expected = micro_cost(Price(Decimal("0.00015"), Decimal("0.0006")), len(r.body_text), 10000)
    assert plan.reserved == {"spend": expected} and expected == 6000 + -(-len(r.body_text) * 15 // 100)
    assert plan.verdict(counts.check_and_add(plan.ops)).admitted  # 6,0xx µ of 10,000 µ
    second = pm.plan("c1", r, NOW)
    assert not second.verdict(counts.check_and_add(second.ops)).admitted  # two would not fit


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "m", "type": "cost"}, "a cost meter needs cost"),
        ({"name": "m", "type": "cost", "cost": {**OPENAI, "prices": {}}}, "prices"),
        ({"name": "m", "type": "cost", "cost": OPENAI, "limits": {"day": "lots"}}, "expected a number"),
        ({"name": "m", "limits": {"day": True}}, "expected a number"),
        ({"name": "m", "type": "cost", "cost": OPENAI, "limits": {"day": 0.0000001}}, "finer than one micro-unit"),
        ({"name": "m", "type": "cost", "cost": OPENAI, "currency": "dollars"}, "a currency is a code"),
        ({"name": "m", "type": "cost", "cost": {**OPENAI, "input": "$.usage[?(@.x =="}}, "input"),
        ({"name": "m", "type": "response_value", "response_value": {"json_path": "$.n"}, "limits": {"day": 2.5}}, "not a whole number"),
        ({"name": "m", "limits": {"day": 5}, "reserve": {"default": 1}}, "reserve is only for"),
        ({"name": "m", "type": "response_value", "response_value": {"json_path": "$.n"}, "reserve": {"json_path": "$.max_tokens"}}, "default"),
        ({"name": "m", "response_value": {"json_path": "$.n"}, "currency": "USD"}, "currency is only for type: cost"),
    ],
)
def test_bad_meter_configuration_says_what_is_wrong(tmp_path, spec, message):
    import yaml

    from rr_addon.config.load import load_files

    path = tmp_path / "rr.yaml"
    path.write_text(yaml.safe_dump({"proxies": [{"name": "p", "meters": [spec]}]}))
    with pytest.raises(ConfigErrors) as e:
        load_files([path])
    text = " ".join(str(err) for err in e.value.errors)
    assert message in text, text
    with pytest.raises(Exception):
        MeterSpec.model_validate(spec)


def test_a_giant_measured_value_is_capped_where_counters_saturate():
    from rr_addon.policy.costs import LARGEST

    pm, counts = meters(TOKENS), Counts()
    plan = pm.plan("c1", req({"max_tokens": 10**40}), NOW)
    assert plan.reserved == {"tokens": LARGEST}
    plan = pm.plan("c1", req({"max_tokens": 5}), NOW)
    assert {op.amount for op in plan.settle(Measurement({"tokens": 10**30}, {}))} == {LARGEST - 5}


def test_which_meters_make_the_proxy_read_request_bodies():
    from rr_addon.policy.meters_schema import MeterSpec as Spec
    from rr_addon.core.quota import compile_meters, meters_read_request_body

    def reads(spec):
        return meters_read_request_body(compile_meters([Spec.model_validate(spec)]))

    value = {"name": "t", "type": "response_value", "response_value": {"json_path": "$.n"}}
    assert not reads(value)
    assert not reads({**value, "reserve": {"default": 10}})  # a fixed reservation needs no body
    assert reads({**value, "reserve": {"json_path": "$.max_tokens", "default": 10}})
    assert reads({**value, "reserve": {"default": 10, "add_request_bytes": True}})
    assert reads({"name": "s", "type": "cost", "cost": OPENAI})  # the model is in the body


def test_giant_counts_and_long_prices_never_raise_and_never_undercount():
    from rr_addon.policy.costs import LARGEST

    price = Price(Decimal("0.00015"), Decimal("0.0006"))
    assert micro_cost(price, 10**100, 0) == micro_cost(price, LARGEST, 0) == 1_351_079_888_211_149  # the count is capped
    assert micro_cost(Price(Decimal(10**9), Decimal(0)), LARGEST, 0) == LARGEST  # and so is the cost
    long = Price(Decimal("0." + "3" * 120), Decimal(0))  # a third, to 120 digits
    assert micro_cost(long, 3000, 0) == 1_000_000  # 0.999…9 USD rounded up to the micro-unit
    pm = meters({"name": "spend", "type": "cost", "cost": OPENAI, "reserve": {"json_path": "$.max_tokens", "default": 1}})
    plan = pm.plan("c1", req({"model": "gpt-4o-mini", "max_tokens": Decimal("1e1000")}, text="{}"), NOW)
    assert plan.reserved == {"spend": micro_cost(price, 0, LARGEST)}
    assert plan.measure({}, {"usage": {"prompt_tokens": 10**200, "completion_tokens": 1}}).values == {"spend": micro_cost(price, LARGEST, 1)}
