"""The per-request cost of rr's Prometheus bookkeeping (a script, not a test).

    .venv/bin/python scripts/bench_metrics.py

`Metrics.request_done` runs once per request on the event loop. About 2-3 µs on
the development machines; tens of microseconds would mean an accident (a lock
held for I/O, a label explosion). Moved here from the test suite: a wall-clock
bound fails under load for no fault of the code.
"""

from __future__ import annotations

import timeit

from rr_addon import metrics


def main() -> None:
    m = metrics.Metrics()
    n = 20_000
    best = min(timeit.repeat(lambda: m.request_done("billing", "stripe", None, 0.00012, total_seconds=0.05), number=n, repeat=5)) / n
    print(f"request_done: {best * 1e6:.2f} µs per request (best of 5 × {n})")


if __name__ == "__main__":
    main()
