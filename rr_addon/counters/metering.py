"""Meters on the request path: counters checked and counted through a backend
(embedded or Redis), with each meter's on_backend_error policy when the
backend is unreachable. Kept apart from the addon so the hooks stay thin."""

from __future__ import annotations

import logging
from typing import Sequence

from rr_addon import metrics
from rr_addon.core.quota import CounterOp, Plan, Verdict
from rr_addon.counters import BackendUnavailable, CounterBackend

logger = logging.getLogger("rr.meters")


class Metering:
    def __init__(self, backend: CounterBackend):
        self.backend = backend
        # the embedded backend answers without I/O: no await on the hot path
        self._sync = hasattr(backend, "check_and_add_now")
        self.backend_errors = 0
        self._down = False

    async def check(self, plan: Plan, proxy: str) -> Verdict:
        refused = plan.refusal()
        if refused is not None:
            return refused
        try:
            if self._sync:
                result = self.backend.check_and_add_now(plan.ops)  # type: ignore[attr-defined]
            else:
                result = await self.backend.check_and_add(plan.ops)
        except BackendUnavailable as e:
            self._failed(e, "check")
            verdict = plan.on_backend_error()
            metrics.degraded_decision(proxy, verdict.admitted)
            return verdict
        self._recovered()
        verdict = plan.verdict(result)
        if verdict.admitted:
            for m in plan.meters:
                if m.type == "request_count":
                    metrics.meter_used(proxy, m.name)
        else:
            for meter, _window in verdict.exhausted[:1]:
                metrics.meter_refused(proxy, meter)
        return verdict

    async def add(self, ops: Sequence[CounterOp]) -> None:
        if not ops:
            return
        try:
            if self._sync:
                self.backend.add_now(ops)  # type: ignore[attr-defined]
            else:
                await self.backend.add(ops)
        except BackendUnavailable as e:
            self._failed(e, "add")

    def _failed(self, e: Exception, operation: str) -> None:
        self.backend_errors += 1
        metrics.backend_error("redis" if not self._sync else "database", operation)
        if not self._down:
            logger.error("rr: counters unavailable (%s); meters follow their on_backend_error policy", e)
        self._down = True

    def _recovered(self) -> None:
        if self._down:
            logger.info("rr: counters available again")
        self._down = False

    async def close(self) -> None:
        await self.backend.close()
