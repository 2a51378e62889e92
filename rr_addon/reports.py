"""What `rr usage` and `rr export` show, computed from the store: shared by the
CLI and the control plane's admin API (`--server`), which sits below the CLI."""

from __future__ import annotations

import os
from decimal import Decimal

import yaml

from rr_addon.policy.costs import MICRO
from rr_addon.core.quota import PROXY_WIDE, UsageRow
from rr_addon.store import config_store


def counter_backend(engine):
    """The backend the proxies count in: Redis with RR_REDIS_URL, else the embedded database."""
    redis_url = os.environ.get("RR_REDIS_URL")
    if redis_url:
        from rr_addon.counters.redis_backend import RedisBackend

        return RedisBackend(redis_url)
    from rr_addon.counters.embedded import EmbeddedBackend

    return EmbeddedBackend(engine)


async def read_counters(backend, prefix: str = "") -> dict[str, int]:
    try:
        return await backend.read(prefix)
    finally:
        await backend.close()


def usage_rows(snap, counts, now, proxy=None, credential=None) -> list[UsageRow]:
    rows: list[UsageRow] = []
    for p in snap.proxies.values():
        if proxy and p.name != proxy:
            continue
        creds = [c for c in p.callers if not credential or c == credential]
        rows += [r for r in p.meters.usage_rows(creds, counts, now) if not credential or r.subject in (credential, PROXY_WIDE)]
    return rows


def row_key(r: UsageRow) -> tuple:
    return (r.proxy, r.meter, r.subject, r.window.kind)


def report(engine, snap, counts: dict[str, int], now: float, proxy=None, credential=None) -> tuple[list[UsageRow], dict[tuple, dict[str, int]]]:
    """The rows `rr usage` shows: the counters of data planes that count here
    (shared database or Redis) plus, on a control plane, the latest counters each
    hybrid data plane or region reported (summed: each scope counts its own
    traffic); and per row, what each reported scope counted."""
    from rr_addon.hybrid import registry

    total, by_scope = registry.reported_counts(engine, now)
    merged = dict(counts)
    for k, v in total.items():
        merged[k] = merged.get(k, 0) + v
    rows = usage_rows(snap, merged, now, proxy, credential)
    scopes: dict[tuple, dict[str, int]] = {}
    for scope, scope_counts in sorted(by_scope.items()):
        for r in usage_rows(snap, scope_counts, now, proxy, credential):
            if r.used:
                scopes.setdefault(row_key(r), {})[scope] = r.used
    return rows, scopes


def row_json(r: UsageRow, now: float) -> dict:
    row = {
        "proxy": r.proxy,
        "meter": r.meter,
        "subject": r.subject,
        "window": r.window.kind,
        "window_key": r.window.key,
        "used": r.used,
        "limit": r.limit,
        "remaining": r.remaining,
        "resets_in": r.window.resets_in(now),
        "unmeasured": r.unmeasured,  # response_value meters: responses whose value could not be read
    }
    if r.currency is not None:
        # cost meters: exact decimal strings in the currency, and the counters' integer micro-units
        row.update(
            used=amount(r.used),
            limit=amount(r.limit),
            remaining=amount(r.remaining),
            currency=r.currency,
            used_micros=r.used,
            limit_micros=r.limit,
        )
    return row


def amount(micros: int | None) -> str | None:
    """Micro-units as an exact decimal string of the currency: 12.5 -> "12.500000"."""
    return None if micros is None else str((Decimal(micros) / MICRO).quantize(Decimal("0.000001")))


def export_text(stored: config_store.Stored) -> str:
    data = stored.config.model_dump(mode="json", exclude_none=True, exclude_defaults=True, by_alias=True)
    header = (
        f"# rr configuration version {stored.version}\n"
        "# Secrets are not exported; a credential without `secret` keeps its stored secret on `rr apply`.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
