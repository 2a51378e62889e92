"""Meters (docs/policy.md: meters): which counters a request touches, and what a count means.

Pure: no I/O, the clock is passed in. The flow of one request is

    plan = proxy_meters.plan(credential, request, now)     # counter ops, cached per window
    result = backend.check_and_add(plan.ops)               # atomic, all or nothing
    verdict = plan.verdict(result)                         # 429 + Retry-After, RateLimit headers
    ... after the response:  backend.add(plan.settle(plan.measure(headers, body)))
                             (an event stream: plan.events(headers, limit) as it passes)

Counter keys (names never contain ':'; window keys come from `core.windows`):
    usage:<proxy>:<credential>:<window key>             every admitted request, UTC windows
    meter:<proxy>:<meter>:<subject>:<window key>        subject: credential name, or "-" for per: proxy
    unmeasured:<proxy>:<meter>:<subject>:<window key>   responses a response_value meter could not measure

Every meter counts in all four windows (a window without a limit is tracked
only), so `rr usage` can show them all.

`response_value` meters add nothing at request time: a request is admitted
while the running total is under the limit, and the value is added after the
response. So a total can overshoot its limit by at most the values of the
requests admitted while it was still under: one in-flight request's value per
concurrent request.

With `reserve:` (docs/budgets.md) a response_value or cost meter counts an
amount *at admission*, read from the request (e.g. `max_tokens`), and admits
only if it fits every window; `Plan.settle` then replaces it by the measured
value (one signed add), and `Plan.release` gives it back when nothing came
back. The check and the add are one atomic backend call, so concurrent
requests can never all take the same headroom: the total exceeds a limit only
by what responses measured beyond their reservations.

`cost` meters count money in integer micro-units of their currency
(`core.costs`): a price by model times the input and output token counts.

A response whose value cannot be read is *unmeasured*: it adds nothing to the
meter, one to its `unmeasured:` counter (`rr usage`), and the reason goes to
the audit record. On `text/event-stream` the value is read from the `data:`
events: the last event in which the path matches gives the value (OpenAI's
final chunk carries `usage` once; Anthropic's `message_delta` carries a
cumulative `usage.output_tokens`, so summing would double-count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

from rr_addon.policy.bodies import BodyError, parse_json
from rr_addon.policy.costs import LARGEST, MICRO, Cost, Price, micro_cost, money
from rr_addon.policy.jsonpaths import compile_matcher, compile_path, find
from rr_addon.core.sse import EventParser
from rr_addon.policy.windows import KINDS, UTC, Window, WindowCache, zone
from rr_addon.core import reasons

PROXY_WIDE = "-"  # the subject of per: proxy meters (a name cannot start with '-')

# Fixed reasons (audit records and tests use these exact sentences).
# the audit record's `degraded` field: a request let through that the meters did not count

# Why a response_value meter could not measure a response (audit `unmeasured`).
NO_VALUE = "no-value"  # the body, or no event, had a count at the meter's path or header
NOT_JSON = "not-json"  # the body is not JSON, or no event of the stream is
TOO_LARGE = "too-large"  # the body is over rr_buffer_limit, or one event is (what was seen before counts)
STREAM_BROKEN = "stream-broken"  # the response broke off: the value seen so far was counted

# Why a cost meter refuses a request before it leaves (403 unknown-model).
UNPRICED_MODEL = "the model has no price in the meter's cost table"


@dataclass(frozen=True, slots=True)
class CounterOp:
    """One counter of one window. `limit` None: never refuses (tracking, usage)."""

    key: str
    amount: int  # added on admission (0: a response_value meter, checked only)
    limit: int | None
    window: Window  # the counter is dead at window.end (Redis EXPIREAT, database pruning)
    meter: str | None = None  # None: a usage counter


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a backend answers. An op refuses when `value >= limit` or
    `value + amount > limit`; then nothing at all was added."""

    admitted: bool
    values: tuple[int, ...]  # per op: after the add if admitted, unchanged if refused
    refused: tuple[int, ...] = ()  # indices of the ops that refused


@dataclass(frozen=True, slots=True)
class Verdict:
    admitted: bool
    reason: str | None = None
    retry_after: int | None = None  # refused: whole seconds (>= 1) until the earliest exhausted window resets
    wait: int | None = None  # refused: seconds until every exhausted window has reset (a retry can succeed)
    exhausted: tuple[tuple[str, str], ...] = ()  # (meter, window kind) that refused
    policy: str | None = None  # RateLimit-Policy header value
    ratelimit: str | None = None  # RateLimit header value
    degraded: bool = False  # decided by on_backend_error, not by counts
    code: str = "quota-exceeded"  # or unknown-model (a cost meter cannot price the request)
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Meter:
    name: str
    type: str  # request_count | response_value
    limits: tuple[int | None, ...]  # aligned with KINDS
    per: str  # proxy | credential
    tz: tzinfo
    on_backend_error: str  # deny | allow
    when: Callable[[Any], bool] | None = None
    source: Callable[[Any, Any], int | None] | None = None  # (headers, body) -> value
    from_body: bool = False  # the source reads the body (json_path), not a header
    cost: Cost | None = None  # type: cost
    reserve: Reservation | None = None
    currency: str | None = None  # cost meters: counters hold micro-units of it

    @property
    def limited(self) -> bool:
        return any(limit is not None for limit in self.limits)

    @property
    def valued(self) -> bool:
        """Counts a value read from the response (response_value, cost)."""
        return self.source is not None or self.cost is not None

    @property
    def scale(self) -> int:
        """Counter units per configured unit: micro-units for money."""
        return MICRO if self.cost is not None else 1


@dataclass(frozen=True, slots=True)
class Reservation:
    """A compiled `reserve:`: how much a request may use, read from its body."""

    amount: Callable[[Any], int | None] | None  # body JSON -> a count (None: absent or not a count)
    default: int
    charge: bool  # a 2xx response that could not be measured keeps the reservation (else released)
    request_bytes: bool  # add the request body's size (an estimate of the prompt's tokens)
    times: Callable[[Any], int | None] | None = None  # body JSON -> how many answers (OpenAI's `n`)

    def tokens(self, body: Any) -> int:
        found = self.amount(body) if self.amount is not None and body is not None else None
        count = self.times(body) if self.times is not None and body is not None else None
        # `n: 0` must not reserve nothing: at least one answer
        return (self.default if found is None else found) * max(1, count or 1)


def compile_meters(specs: Iterable[Any], when_compiler: Callable[[Any], Callable[[Any], bool]] | None = None) -> tuple[Meter, ...]:
    """Compile `MeterSpec`s. `when_compiler` turns a spec's `when` mapping into a
    predicate over the request (the rule match syntax lives in the rules module)."""
    meters = []
    for s in specs:
        when = None
        if s.when is not None:
            if when_compiler is None:
                raise ValueError(f"meter {s.name!r}: 'when' needs a predicate compiler")
            when = when_compiler(s.when)
        source = _compile_source(s.response_value) if s.type == "response_value" else None
        from_body = (source is not None and getattr(s.response_value, "header", None) is None) or s.type == "cost"
        cost = _compile_cost(s.cost) if s.type == "cost" else None
        reserve = None
        if getattr(s, "reserve", None) is not None:
            r = s.reserve
            add_bytes = r.add_request_bytes if r.add_request_bytes is not None else cost is not None
            reserve = Reservation(
                _largest_at(r.json_path) if r.json_path is not None else None,
                r.default,
                r.unmeasured == "charge",
                add_bytes,
                _largest_at(r.times) if r.times is not None else None,
            )
        limits = s.limits.by_kind(MICRO if cost is not None else 1)
        currency = (s.currency or "USD") if cost is not None else None
        meters.append(Meter(s.name, s.type, limits, s.per, zone(s.timezone), s.on_backend_error, when, source, from_body, cost, reserve, currency))
    return tuple(meters)


def meters_read_request_body(meters: Iterable[Meter]) -> bool:
    """A price (the model), or a reservation read from the body or sized by it, needs the
    request body (the glue then reads it whole, up to rr_inspect_limit)."""
    return any(
        m.cost is not None or (m.reserve is not None and (m.reserve.amount is not None or m.reserve.request_bytes or m.reserve.times is not None))
        for m in meters
    )


def usage_key(proxy: str, credential: str, window_key: str) -> str:
    return f"usage:{proxy}:{credential}:{window_key}"


def meter_key(proxy: str, meter: str, subject: str, window_key: str) -> str:
    return f"meter:{proxy}:{meter}:{subject}:{window_key}"


def unmeasured_key(proxy: str, meter: str, subject: str, window_key: str) -> str:
    return f"unmeasured:{proxy}:{meter}:{subject}:{window_key}"


def _unmeasured(op: CounterOp) -> CounterOp:
    """The unmeasured counter beside a meter counter (same meter, subject and window)."""
    return CounterOp("unmeasured:" + op.key.partition(":")[2], 1, None, op.window, op.meter)


_NOTHING: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Measurement:
    """What the response_value meters of one response read."""

    values: Mapping[str, int]  # meter -> the value counted
    unmeasured: Mapping[str, str]  # meter -> why it could not be measured (NO_VALUE, …)


@dataclass(frozen=True, slots=True)
class _Group:
    """The ops of one meter (or the usage counters) for one subject, valid while
    all its windows are current; header fragments rendered once."""

    meter: Meter | None
    ops: tuple[CounterOp, ...]
    valid_from: int
    valid_until: int
    limited: tuple[int, ...]  # indices of ops with a limit
    policies: tuple[str, ...]  # per op: its RateLimit-Policy item ("" without a limit)


@dataclass(frozen=True, slots=True)
class Plan:
    ops: tuple[CounterOp, ...]
    groups: tuple[_Group, ...]
    now: float
    reserved: Mapping[str, int] = _NOTHING  # meter -> the amount its ops add at admission (reserve:)
    prices: Mapping[str, Price] = _NOTHING  # cost meter -> the price of the model the request names
    unpriced: tuple[str, str] | None = None  # (cost meter, model): the request names a model without a price

    @property
    def meters(self) -> tuple[Meter, ...]:
        """The meters that apply to this request."""
        return tuple(g.meter for g in self.groups if g.meter is not None)

    @property
    def limited(self) -> bool:
        return any(g.limited for g in self.groups)

    @property
    def needs_response(self) -> bool:
        """A response_value or cost meter applies: the glue must hand over the response."""
        return any(m.valued for m in self.meters)

    def verdict(self, result: CheckResult) -> Verdict:
        policy, ratelimit = self._headers(result.values)
        if result.admitted:
            return Verdict(True, policy=policy, ratelimit=ratelimit)
        windows = [self.ops[i].window for i in result.refused]
        return Verdict(
            False,
            reasons.QUOTA_EXCEEDED,
            retry_after=min(w.resets_in(self.now) for w in windows),
            wait=max(w.resets_in(self.now) for w in windows),
            exhausted=tuple((self.ops[i].meter or "", self.ops[i].window.kind) for i in result.refused),
            policy=policy,
            ratelimit=ratelimit,
        )

    def refusal(self) -> Verdict | None:
        """Refused before any counter is touched: a cost meter has no price for the model the request names."""
        if self.unpriced is None:
            return None
        meter, model = self.unpriced
        return Verdict(False, UNPRICED_MODEL, exhausted=((meter, ""),), code="unknown-model", detail=f"model {model}")

    def on_backend_error(self) -> Verdict:
        """The verdict when the counters cannot be reached: deny if any limited
        meter that applies says so, else allow (nothing is counted)."""
        if any(m.limited and m.on_backend_error == "deny" for m in self.meters):
            return Verdict(False, reasons.METER_BACKEND_DENY, retry_after=1, wait=1, degraded=True)
        return Verdict(True, reasons.METER_BACKEND_ALLOW if self.limited else None, degraded=True)

    @property
    def value_meters(self) -> tuple[Meter, ...]:
        return tuple(m for m in self.meters if m.valued)

    def measure(self, headers: Any, body: Any, *, failed: str | None = None) -> Measurement:
        """The values of one whole response. `headers` has `.get(name)` (mitmproxy
        Headers, or a dict with lower-case names); `body` is parsed JSON (e.g. from
        `core.bodies.parse_json`) or the decoded bytes/str to parse. `failed`: the
        body could not be read (a reason such as NOT_JSON or TOO_LARGE)."""
        values: dict[str, int] = {}
        unmeasured: dict[str, str] = {}
        parsed = _UNPARSED
        for m in self.value_meters:
            if m.from_body:
                if failed is not None:
                    unmeasured[m.name] = failed
                    continue
                if parsed is _UNPARSED:
                    parsed = _parse(body)
                if parsed is _NOT_JSON:
                    unmeasured[m.name] = NOT_JSON
                    continue
                if m.cost is not None:
                    value = self._cost(m, _cost_parts(m.cost, parsed, {}))
                else:
                    value = m.source(headers, parsed)  # type: ignore[misc]
            else:
                value = m.source(headers, None)  # type: ignore[misc]
            if value is None:
                unmeasured[m.name] = NO_VALUE
            else:
                values[m.name] = value
        return Measurement(values, unmeasured)

    def events(self, headers: Any, limit: int) -> EventMeasure:
        """A meter for a `text/event-stream` body, fed as it passes (see EventMeasure)."""
        return EventMeasure(self.value_meters, headers, limit, self)

    def _cost(self, m: Meter, parts: Mapping[str, Any]) -> int | None:
        """A cost meter's value in micro-units: both token counts needed. The price is the
        request's model's; else the response's; else the table's highest (never undercount)."""
        cost = m.cost
        assert cost is not None
        if parts.get("input") is None or parts.get("output") is None:
            return None
        price = self.prices.get(m.name) or cost.price(parts.get("model")) or cost.highest
        return micro_cost(price, parts["input"], parts["output"])

    def settle(self, measured: Measurement, status: int | None = 200) -> tuple[CounterOp, ...]:
        """The adds after a response (`status`; None: no response at all): per value meter
        the measured value minus what admission reserved (signed), and one to the
        unmeasured counters of each meter that could not measure.

        Nothing measured: a reservation is kept for a 2xx response when the meter says
        `unmeasured: charge` (a caller must not spend for free by suppressing the usage
        or hanging up before it), else released. A partial value (a broken stream) is
        charged at least the reservation under `charge`."""
        ops: list[CounterOp] = []
        charges = self.charges(measured, status)
        for g in self.groups:
            m = g.meter
            if m is None or not m.valued:
                continue
            reserved = self.reserved.get(m.name, 0)
            charge = charges[m.name]
            if charge != reserved:
                ops.extend(CounterOp(op.key, charge - reserved, None, op.window, op.meter) for op in g.ops)
            if m.name in measured.unmeasured:
                ops.extend(_unmeasured(op) for op in g.ops)
        return tuple(ops)

    def charges(self, measured: Measurement, status: int | None = 200) -> dict[str, int]:
        """What each value meter counts for this request once settled (see `settle`)."""
        answered = status is not None and 200 <= status < 300
        out = {}
        for m in self.value_meters:
            keep = self.reserved.get(m.name, 0) if answered and m.reserve is not None and m.reserve.charge else 0
            value = measured.values.get(m.name)
            if value is None:
                charge = keep
            elif m.name in measured.unmeasured:
                charge = max(value, keep)
            else:
                charge = value
            out[m.name] = min(charge, LARGEST)  # a giant value from the upstream: counters saturate there
        return out

    def charged(self, measured: Measurement, status: int | None = 200) -> dict[str, int | str]:
        """`charges` as the audit record shows them: counts, or money with its currency."""
        by_name = {m.name: m for m in self.value_meters}
        return {k: v if by_name[k].currency is None else money(v, by_name[k].currency) for k, v in self.charges(measured, status).items()}  # type: ignore[misc]

    def release(self) -> tuple[CounterOp, ...]:
        """The adds that give back every reservation (no response came back)."""
        return self.settle(Measurement({}, {}), status=None)

    def refund(self) -> tuple[CounterOp, ...]:
        """The adds that undo what admission counted on the meters, for a request
        that never reached the upstream (rr's own 502/504 before anything went
        out). The per-credential usage counters keep the attempt."""
        return tuple(CounterOp(op.key, -op.amount, None, op.window, op.meter) for op in self.ops if op.meter is not None and op.amount > 0)

    def response_ops(self, headers: Any, body: Any) -> tuple[CounterOp, ...]:
        """The value adds of one whole response (no unmeasured counts); see `measure`."""
        measured = self.measure(headers, body)
        return self.settle(Measurement(measured.values, {}))

    def _headers(self, values: Sequence[int]) -> tuple[str | None, str | None]:
        # Per meter, report the window with the least remaining; on a tie the one
        # that resets last (it is the one the caller will wait for).
        policy: list[str] = []
        rate: list[str] = []
        base = 0
        for g in self.groups:
            if g.limited:
                best, best_r, best_end = -1, 0, 0
                for j in g.limited:
                    op = g.ops[j]
                    r = op.limit - values[base + j]  # type: ignore[operator]
                    if best < 0 or r < best_r or (r == best_r and op.window.end > best_end):
                        best, best_r, best_end = j, r, op.window.end
                policy.append(g.policies[best])
                rate.append(f'"{g.meter.name}";r={max(0, best_r)};t={max(0, math.ceil(best_end - self.now))}')  # type: ignore[union-attr]
            base += len(g.ops)
        if not policy:
            return None, None
        return ", ".join(policy), ", ".join(rate)


class ProxyMeters:
    """The compiled meters of one proxy. Counter ops are built once per
    (meter, subject, window) and reused until a window turns over, so planning
    a request costs a few dictionary lookups."""

    def __init__(self, proxy: str, meters: Sequence[Meter]) -> None:
        self.proxy = proxy
        self.meters = tuple(meters)
        self._windows: dict[tzinfo, WindowCache] = {}
        self._groups: dict[tuple[int, str], _Group] = {}

    def plan(self, credential: str, request: Any, now: float) -> Plan:
        g = self._group(-1, credential, now)
        groups = [g]
        ops = g.ops
        reserved: dict[str, int] | None = None
        prices: dict[str, Price] = {}
        unpriced = None
        for i, m in enumerate(self.meters):
            if m.when is None or m.when(request):
                g = self._group(i, credential if m.per == "credential" else PROXY_WIDE, now)
                if m.reserve is not None or m.cost is not None:
                    body = getattr(request, "body_json", None)
                    price = None
                    if m.cost is not None:
                        model = m.cost.model(body) if body is not None else None
                        price = m.cost.price(model) if model is not None else None
                        if model is not None and price is None and unpriced is None:
                            unpriced = (m.name, model if isinstance(model, str) else _render(model))
                        if price is not None:
                            prices[m.name] = price
                    if m.reserve is not None:
                        amount = _reservation(m, body, _body_size(request), price)
                        reserved = reserved or {}
                        reserved[m.name] = amount
                        g = _with_amount(g, amount)
                groups.append(g)
                ops += g.ops
        if reserved is None and not prices and unpriced is None:
            return Plan(ops, tuple(groups), now)
        return Plan(ops, tuple(groups), now, MappingProxyType(reserved or {}), MappingProxyType(prices), unpriced)

    def windows(self, tz: tzinfo, now: float) -> tuple[Window, ...]:
        cache = self._windows.get(tz)
        if cache is None:
            cache = self._windows[tz] = WindowCache(tz)
        return tuple(cache.get(k, now) for k in KINDS)

    def _group(self, index: int, subject: str, now: float) -> _Group:
        g = self._groups.get((index, subject))
        if g is None or not (g.valid_from <= now < g.valid_until):
            g = self._groups[(index, subject)] = self._build(index, subject, now)
        return g

    def _build(self, index: int, subject: str, now: float) -> _Group:
        if index < 0:
            meter = None
            ops = tuple(CounterOp(usage_key(self.proxy, subject, w.key), 1, None, w) for w in self.windows(UTC, now))
        else:
            meter = self.meters[index]
            amount = 1 if meter.type == "request_count" else 0
            ops = tuple(
                CounterOp(meter_key(self.proxy, meter.name, subject, w.key), amount, limit, w, meter.name)
                for w, limit in zip(self.windows(meter.tz, now), meter.limits)
            )
        return _Group(
            meter,
            ops,
            max(op.window.start for op in ops),
            min(op.window.end for op in ops),
            tuple(i for i, op in enumerate(ops) if op.limit is not None),
            tuple("" if op.limit is None else f'"{op.meter}";q={op.limit};w={op.window.seconds}' for op in ops),
        )

    def usage_rows(self, credentials: Iterable[str], counts: Mapping[str, int], now: float) -> list[UsageRow]:
        """Every counter of the current windows, for `rr usage`: usage per
        credential, then each meter per subject. `counts` is a backend's read()."""
        credentials = list(credentials)
        rows = []
        for c in credentials:
            rows += [UsageRow(self.proxy, None, c, op.window, counts.get(op.key, 0), None) for op in self._build(-1, c, now).ops]
        for i, m in enumerate(self.meters):
            for subject in credentials if m.per == "credential" else [PROXY_WIDE]:
                for op in self._build(i, subject, now).ops:
                    unmeasured = counts.get(_unmeasured(op).key, 0) if m.valued else None
                    rows.append(UsageRow(self.proxy, m.name, subject, op.window, counts.get(op.key, 0), op.limit, unmeasured, m.currency))
        return rows


@dataclass(frozen=True, slots=True)
class UsageRow:
    proxy: str
    meter: str | None  # None: the per-credential usage counter
    subject: str  # credential name, or "-" for a per: proxy meter
    window: Window
    used: int
    limit: int | None
    unmeasured: int | None = None  # response_value meters: responses that could not be measured
    currency: str | None = None  # cost meters: used and limit are micro-units of this currency

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)


# --------------------------------------------------------------------------
# Reading a response value.

_UNPARSED = object()
_NOT_JSON = object()


def _parse(body: Any) -> Any:
    if isinstance(body, (bytes, bytearray, str)):
        try:
            return parse_json(body)
        except BodyError:
            return _NOT_JSON
    return body


class EventMeasure:
    """A stage of a streamed `text/event-stream` response (`StreamScrubber(tap=…)`):
    it sees every chunk as the upstream sent it and changes nothing. Each JSON
    event is read as it completes; each meter keeps the value of the last event
    its path matched. Header meters read the response headers once. Memory: one
    event, at most `limit` bytes (beyond that the response is TOO_LARGE; values
    seen before still count)."""

    __slots__ = ("parser", "body_meters", "header_values", "last", "json_events", "costs", "plan", "parts")

    def __init__(self, meters: Sequence[Meter], headers: Any, limit: int, plan: Plan | None = None) -> None:
        self.parser = EventParser(limit)
        self.body_meters = tuple((m.name, m.source) for m in meters if m.from_body and m.cost is None)
        self.costs = tuple(m for m in meters if m.cost is not None)
        self.header_values = {m.name: m.source(headers, None) for m in meters if not m.from_body}  # type: ignore[misc]
        self.last: dict[str, int] = {}
        self.json_events = 0
        self.plan = plan
        # cost meters: the last input count, output count and model seen, each in its own event
        # (Anthropic: message_start carries the input, message_delta the cumulative output)
        self.parts: dict[str, dict[str, Any]] = {m.name: {} for m in self.costs}

    def __call__(self, chunk: bytes) -> None:
        if not self.body_meters and not self.costs:
            return
        for data in self.parser.feed(chunk):
            try:
                doc = parse_json(data)
            except BodyError:  # [DONE], pings, anything not JSON: not an event with values
                continue
            self.json_events += 1
            for name, source in self.body_meters:
                value = source(None, doc)
                if value is not None:
                    self.last[name] = value
            for m in self.costs:
                _cost_parts(m.cost, doc, self.parts[m.name])  # type: ignore[arg-type]

    def result(self, *, broken: bool = False) -> Measurement:
        """The measurement; `broken`: the stream ended early (the values seen so far count)."""
        values = {k: v for k, v in self.header_values.items() if v is not None}
        unmeasured = {k: NO_VALUE for k, v in self.header_values.items() if v is None}
        plan = self.plan if self.plan is not None else Plan((), (), 0.0)
        for m in self.costs:
            value = plan._cost(m, self.parts[m.name])
            if value is not None:
                self.last[m.name] = value
        for name in [n for n, _ in self.body_meters] + [m.name for m in self.costs]:
            if name in self.last:
                values[name] = self.last[name]
            if self.parser.over:
                unmeasured[name] = TOO_LARGE
            elif broken:
                unmeasured[name] = STREAM_BROKEN
            elif name not in self.last:
                unmeasured[name] = NO_VALUE if self.json_events else NOT_JSON
        return Measurement(values, unmeasured)


def _compile_source(spec: Any) -> Callable[[Any, Any], int | None]:
    header = getattr(spec, "header", None)
    if header is not None:
        return lambda headers, _body: number(headers.get(header) if headers is not None else None)
    matcher = compile_matcher([compile_path(spec.json_path)])  # the JSONPath dialect of filters and rules

    def from_json(_headers: Any, body: Any) -> int | None:
        try:
            found = find(body, matcher) if body is not None else []
        except Exception:  # e.g. a body nested too deeply: an upstream body must not break the response
            return None
        return number(found[0]) if found else None

    return from_json


def _count_at(paths: str | Sequence[str]) -> Callable[[Any], int | None]:
    """A count at the first of `paths` that finds one in a document."""
    readers = [_first_at(p) for p in ([paths] if isinstance(paths, str) else paths)]

    def count(doc: Any) -> int | None:
        for read in readers:
            value = number(read(doc))
            if value is not None:
                return value
        return None

    return count


def _largest_at(paths: str | Sequence[str]) -> Callable[[Any], int | None]:
    """The largest count any of `paths` finds: a request naming both `max_tokens` and
    `max_completion_tokens` reserves the larger, whichever the upstream honours."""
    readers = [_first_at(p) for p in ([paths] if isinstance(paths, str) else paths)]

    def largest(doc: Any) -> int | None:
        found = [v for read in readers if (v := number(read(doc))) is not None]
        return max(found) if found else None

    return largest


def _first_at(path: str) -> Callable[[Any], Any]:
    matcher = compile_matcher([compile_path(path)])

    def first(doc: Any) -> Any:
        try:
            found = find(doc, matcher) if doc is not None else []
        except Exception:  # a document nested too deeply: no value, not an error
            return None
        return found[0] if found else None

    return first


def _model_at(paths: str | Sequence[str]) -> Callable[[Any], Any]:
    readers = [_first_at(p) for p in ([paths] if isinstance(paths, str) else paths)]

    def model(doc: Any) -> Any:
        for read in readers:
            value = read(doc)
            if value is not None:
                return value
        return None

    return model


def _compile_cost(spec: Any) -> Cost:
    price = lambda p: Price(Decimal(p.input), Decimal(p.output))  # noqa: E731
    return Cost(
        _model_at(spec.model),
        MappingProxyType({name: price(p) for name, p in spec.prices.items()}),
        price(spec.default) if spec.default is not None else None,
        _count_at(spec.input),
        _count_at(spec.output),
    )


def _cost_parts(cost: Cost, doc: Any, into: dict[str, Any]) -> dict[str, Any]:
    """The token counts and model one document shows, over what earlier documents showed."""
    for part, read in (("input", cost.input), ("output", cost.output), ("model", cost.model)):
        value = read(doc)
        if value is not None:
            into[part] = value
    return into


def _reservation(m: Meter, body: Any, size: int, price: Price | None) -> int:
    """What a request reserves: the count the request allows (or the default); plus its body
    size when configured (a prompt has at most about one token per byte of text). A cost
    meter prices that as output and the body size as input, at the request's model's
    price, or the table's highest when the request names no model."""
    r = m.reserve
    assert r is not None
    tokens = r.tokens(body)
    extra = size if r.request_bytes else 0
    amount = tokens + extra if m.cost is None else micro_cost(price or m.cost.highest, extra, tokens)
    return min(amount, LARGEST)  # a giant max_tokens is refused by any limit; a counter must stay exact


def _body_size(request: Any) -> int:
    text = getattr(request, "body_text", None)
    return len(text.encode("utf-8", "surrogateescape")) if text else 0


def _with_amount(g: _Group, amount: int) -> _Group:
    """A meter's group with the request's reservation as its admission amount (not cached)."""
    ops = tuple(CounterOp(op.key, amount, op.limit, op.window, op.meter) for op in g.ops)
    return _Group(g.meter, ops, g.valid_from, g.valid_until, g.limited, g.policies)


def _render(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def number(value: Any) -> int | None:
    """A count from a JSON value or header: non-negative, fractions rounded up
    (never undercount); anything else is None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip()) if not value.strip().isdigit() else int(value.strip())
        except ValueError:
            return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return math.ceil(value)
    if isinstance(value, Decimal) and value.is_finite() and value >= 0:  # core.bodies parses fractions so
        return math.ceil(value)
    return None
