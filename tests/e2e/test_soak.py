"""A small run of scripts/soak.py (the full 100,000-request run is in docs/reliability.md)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


def test_small_soak(tmp_path):
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    result = soak.run_soak(1200, 4, tmp_path)
    assert result["unexpected"] == 0, result["unexpected_sample"]
    assert result["audit_records"] == 1200  # one record per request, none lost on a clean shutdown
    assert result["outcomes"]["throttled 429"] > 100 and result["outcomes"]["denied 403"] == 180
