"""Services.open_counters: the backend it replaces is closed, with or without a running event loop."""

from __future__ import annotations

import asyncio
import warnings

from rr_addon.gate import Gate
from rr_addon.reload import Reloader
from rr_addon.services import Services
from rr_addon.store.db import make_engine, migrate


def _services(tmp_path) -> Services:
    services = Services(Gate(), Reloader(), "test-plane")
    services.engine = make_engine(f"sqlite:///{tmp_path / 'rr.db'}")
    migrate(services.engine)
    return services


def test_replaced_backend_is_closed_without_a_running_loop(tmp_path):
    services = _services(tmp_path)
    services.open_counters(None)
    flusher = services.gate.metering.backend._thread
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # asyncio.get_event_loop() without a loop warns
        services.open_counters(None)
    assert flusher is not None and not flusher.is_alive()  # closed: its flusher stopped
    asyncio.run(services.gate.metering.close())


def test_replaced_backend_is_closed_in_the_background_on_the_running_loop(tmp_path):
    services = _services(tmp_path)

    async def main():
        services.open_counters(None)
        flusher = services.gate.metering.backend._thread
        services.open_counters(None)
        assert flusher.is_alive() and len(services._closing) == 1
        await asyncio.gather(*services._closing)
        assert not services._closing
        assert not flusher.is_alive()
        await services.gate.metering.close()

    asyncio.run(main())
