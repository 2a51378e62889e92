"""The control plane's admin endpoints (`/v1/admin/…`), behind an admin token:
what `rr status`, `rr audit`, `rr usage`, `rr export` and `rr apply` do when
given `--server URL`. Each handler takes the request (admin, query, body) and
returns JSON."""

from __future__ import annotations

from typing import Any

from rr_addon.store import audit_store, config_store, dataplanes


def status(cp: Any, req: dict, _: dict) -> dict:
    return {
        "config_version": config_store.current_version(cp.engine),
        "database": "control plane",
        "dataplanes": [p.as_json() for p in dataplanes.list_planes(cp.engine)],
    }


def install(cp: Any) -> None:
    cp.admin_handlers.update({("GET", "/v1/admin/status"): status})
