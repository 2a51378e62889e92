"""Money for `type: cost` meters (docs/budgets.md): a price table by model, exact
decimal arithmetic, integer micro-units in the counters. Pure.

A cost is computed once per response from its token counts,
`(input × price.input + output × price.output) / 1000` (prices are per 1,000
tokens), exactly in Decimal, then rounded *up* to a whole micro-unit of the
currency (never undercount): a request costs at most one micro-unit more than
its exact price, and counters never drift (integers add exactly).
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any, Callable, Mapping

MICRO = 1_000_000  # counter units per currency unit
LARGEST = 2**53  # counters are exact up to here (Redis Lua numbers are doubles)
# 80 digits hold any price times any count up to 2**53 exactly; beyond that (a price
# written with dozens of digits) every step rounds up, so a cost is never undercounted.
_EXACT = decimal.Context(prec=80, rounding=ROUND_CEILING, traps=[decimal.InvalidOperation])


@dataclass(frozen=True, slots=True)
class Price:
    """Per 1,000 tokens, in the meter's currency."""

    input: Decimal
    output: Decimal


def micro_cost(price: Price, input_tokens: int, output_tokens: int) -> int:
    """The cost in micro-units, rounded up. Counts are capped at LARGEST (a giant count
    from an upstream costs the most a counter can hold, not an error)."""
    input_tokens, output_tokens = min(input_tokens, LARGEST), min(output_tokens, LARGEST)
    total = _EXACT.add(_EXACT.multiply(price.input, Decimal(input_tokens)), _EXACT.multiply(price.output, Decimal(output_tokens)))
    micros = _EXACT.multiply(total, Decimal(MICRO // 1000))  # per 1,000 tokens, in micro-units
    return min(int(micros.to_integral_value(rounding=ROUND_CEILING)), LARGEST)


def money(micros: int | None, currency: str) -> str | None:
    """`12.5 USD` from micro-units: at least two decimals, no trailing zeros beyond."""
    if micros is None:
        return None
    value = (Decimal(micros) / MICRO).quantize(Decimal("0.000001"))
    text = format(value, "f").rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')} {currency}"


@dataclass(frozen=True, slots=True)
class Cost:
    """A compiled `cost:` block. `model`, `input`, `output` read a parsed JSON document
    (the request body, a response, or one event of a stream)."""

    model: Callable[[Any], Any]  # -> the model name (any JSON value), or None when absent
    prices: Mapping[str, Price]
    default: Price | None
    input: Callable[[Any], int | None]
    output: Callable[[Any], int | None]

    def price(self, model: Any) -> Price | None:
        """The price of a model named exactly so (else `default`); None when unpriced."""
        found = self.prices.get(model) if isinstance(model, str) else None
        return found if found is not None else self.default

    @property
    def highest(self) -> Price:
        """The dearest input and output prices of the table: what an unnamed model is reserved and charged at."""
        every = [*self.prices.values(), *([self.default] if self.default else [])]
        return Price(max(p.input for p in every), max(p.output for p in every))
