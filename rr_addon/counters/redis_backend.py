"""Shared counters in Redis, exact across every proxy process.

One Lua script reads every counter of a request, and adds to all of them only
if none refuses: Redis runs a script atomically, so concurrent processes can
never both take the last unit. Each key expires at its window's end
(EXPIREAT), so Redis itself forgets finished windows. Scripts are sent by
EVALSHA (redis-py's `register_script`); after a Redis restart (NOSCRIPT) it is
loaded again once.

Window keys are computed by each process from its own clock: keep the
proxies' clocks in sync (NTP), or two processes may count a request at a
window boundary in different windows.

When Redis cannot be reached, calls raise BackendUnavailable quickly: after a
failure, calls fail without trying for `cooldown` seconds, then the next call
tries again, so an outage costs no latency per request and recovery needs no
one. Redis Cluster is not supported (the keys of one request span slots).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Awaitable, Callable, Sequence

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from rr_addon.counters.base import BackendUnavailable, CheckResult, CounterOp

logger = logging.getLogger(__name__)

# ARGV[1] is one string "amount,limit,end amount,limit,end ..." (limit -1: none), one
# triple per key: a single argument encodes several times faster than 3 per key.
# Returns {1, values} or {0, values, refused indices}, each list as a "1,2,3" string:
# one bulk string parses much faster in the client than a 16-element array.
CHECK_AND_ADD = """
local LARGEST = 9007199254740992
local amount, limit, ending, values, refused = {}, {}, {}, {}, {}
local n = 0
for a, l, e in string.gmatch(ARGV[1], '(%d+),(-?%d+),(%d+)') do
  n = n + 1
  amount[n], limit[n], ending[n] = tonumber(a), tonumber(l), e
end
for i = 1, #KEYS do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  values[i] = v
  if limit[i] >= 0 and (v >= limit[i] or v + amount[i] > limit[i]) then refused[#refused+1] = i - 1 end
end
local function csv(t)
  local out = {}
  for i = 1, #t do out[i] = string.format('%d', t[i]) end
  return table.concat(out, ',')
end
if #refused > 0 then return {0, csv(values), csv(refused)} end
for i = 1, #KEYS do
  if amount[i] > 0 then
    if values[i] + amount[i] > LARGEST then  -- saturate: INCRBY past 2^63 would fail every later call
      values[i] = LARGEST
      redis.call('SET', KEYS[i], string.format('%d', LARGEST))
    else
      values[i] = redis.call('INCRBY', KEYS[i], amount[i])
    end
    redis.call('EXPIREAT', KEYS[i], ending[i])
  end
end
return {1, csv(values)}
"""

# ARGV per key i: amount (signed: a settled reservation may give back), window end.
# Counters saturate at 2**53 (costs.LARGEST): a hostile upstream's giant value must not
# push a counter past what INCRBY (2**63) and Lua's doubles (2**53) handle exactly.
ADD = """
local LARGEST = 9007199254740992
for i = 1, #KEYS do
  local amount = tonumber(ARGV[2*i-1])
  if tonumber(redis.call('GET', KEYS[i]) or '0') + amount > LARGEST then
    redis.call('SET', KEYS[i], string.format('%d', LARGEST))
  else
    redis.call('INCRBY', KEYS[i], ARGV[2*i-1])
  end
  redis.call('EXPIREAT', KEYS[i], ARGV[2*i])
end
return #KEYS
"""

# Errors that mean "Redis is not there (now)", not "rr asked wrongly".
UNAVAILABLE = (
    rx.ConnectionError,  # includes BusyLoadingError
    rx.TimeoutError,
    rx.ReadOnlyError,  # a replica after failover
    rx.MasterDownError,
    rx.TryAgainError,
    rx.OutOfMemoryError,
    OSError,
)


class RedisBackend:
    def __init__(
        self,
        url: str,
        *,
        namespace: str = "rr:",
        timeout: float = 0.5,
        cooldown: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # One immediate retry on a broken connection, so the pooled connections a Redis restart
        # killed are replaced without a failed request. Not on timeouts: the script may have run,
        # and running it twice would count twice.
        retry = Retry(NoBackoff(), 1, supported_errors=(rx.ConnectionError,))
        self._client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=retry)
        self.namespace = namespace
        self._cooldown = cooldown
        self._clock = clock
        self._retry_at = 0.0
        self.failures = 0  # calls answered with BackendUnavailable (a metric for operators)
        self.available = True
        # redis-py's scripts: EVALSHA, and after a Redis restart (NOSCRIPT) SCRIPT LOAD and EVALSHA again
        self._check = self._client.register_script(CHECK_AND_ADD)
        self._add = self._client.register_script(ADD)

    async def check_and_add(self, ops: Sequence[CounterOp]) -> CheckResult:
        if not ops:
            return CheckResult(True, ())
        spec = " ".join([f"{op.amount},{-1 if op.limit is None else op.limit},{op.window.end}" for op in ops])
        ns = self.namespace
        reply = await self._run(self._check, [ns + op.key for op in ops], [spec])
        values = tuple(map(int, reply[1].split(b",")))
        if reply[0] == 1:
            return CheckResult(True, values)
        return CheckResult(False, values, tuple(map(int, reply[2].split(b","))))

    async def add(self, ops: Sequence[CounterOp]) -> None:
        ops = [op for op in ops if op.amount]
        if not ops:
            return
        args: list[Any] = []
        for op in ops:
            args += (op.amount, op.window.end)
        await self._run(self._add, [self.namespace + op.key for op in ops], args)

    async def read(self, prefix: str) -> dict[str, int]:
        keys = await self._guard(lambda: self._keys(prefix))
        out: dict[str, int] = {}
        cut = len(self.namespace)
        for i in range(0, len(keys), 500):
            batch = keys[i : i + 500]
            values = await self._guard(lambda: self._client.mget(batch))
            out.update((k.decode()[cut:], int(v)) for k, v in zip(batch, values) if v is not None)
        return out

    async def reset(self, prefix: str) -> int:
        keys = await self._guard(lambda: self._keys(prefix))
        deleted = 0
        for i in range(0, len(keys), 500):
            deleted += await self._guard(lambda: self._client.unlink(*keys[i : i + 500]))
        return deleted

    async def close(self) -> None:
        await self._client.aclose()

    async def _keys(self, prefix: str) -> list[bytes]:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.namespace + prefix) + "*"
        return [k async for k in self._client.scan_iter(match=pattern, count=1000)]

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        return await self._guard(lambda: script(keys=keys, args=args))

    async def _guard(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a Redis call, turning "Redis is not there" into BackendUnavailable."""
        if self._clock() < self._retry_at:
            self.failures += 1
            raise BackendUnavailable("redis counters unavailable (retrying shortly)")
        try:
            result = await call()
        except UNAVAILABLE as e:
            self._retry_at = self._clock() + self._cooldown
            self.failures += 1
            if self.available:
                self.available = False
                logger.warning("counters: redis unavailable: %s", e)
            raise BackendUnavailable(f"redis counters unavailable: {e}") from None
        if not self.available:
            self.available = True
            logger.info("counters: redis available again")
        return result
