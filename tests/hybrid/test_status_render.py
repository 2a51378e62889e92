"""`rr status` on a control plane marks a hybrid data plane whose configuration is stale."""

from __future__ import annotations

from datetime import datetime, timezone

from rich.console import Console

from rr_addon.cli.ops import status_table
from rr_addon.store.dataplanes import DataPlane


def render(table) -> str:
    console = Console(width=250, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def plane(stats: dict) -> DataPlane:
    now = datetime.now(timezone.utc)
    return DataPlane("eu-1/host-1-abc", "host", 1, "0.0.0.0:8080", now, now, 7, "0.1.0", stats, 1.0, False)


def test_a_stale_hybrid_data_plane_says_since_when_and_a_current_one_does_not():
    text = render(status_table([plane({"hybrid": {"stale": True, "stale_since": "2026-12-05T08:01:13+00:00"}})], 7))
    assert "7 (stale since 2026-12-05T08:01:13+00:00)" in text
    assert "stale" not in render(status_table([plane({"hybrid": {"stale": False, "stale_since": None}}), plane({})], 7))
