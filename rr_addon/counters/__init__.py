"""Counter backends for meters: embedded (memory + database, the default) or Redis (shared, exact)."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from rr_addon.counters.base import BackendUnavailable, CheckResult, CounterBackend, CounterOp, SyncCounterBackend

__all__ = ["BackendUnavailable", "CheckResult", "CounterBackend", "CounterOp", "SyncCounterBackend", "open_backend"]


def open_backend(*, redis_url: str | None, engine: Engine, flush_interval: float = 0.25) -> CounterBackend:
    """Redis when a URL is given (RR_REDIS_URL / rr_redis_url), else the embedded
    backend, started (counts loaded, flusher running). Close it at shutdown."""
    if redis_url:
        from rr_addon.counters.redis_backend import RedisBackend

        return RedisBackend(redis_url)
    from rr_addon.counters.embedded import EmbeddedBackend

    backend = EmbeddedBackend(engine, flush_interval=flush_interval)
    backend.start()
    return backend
