"""Code run in a fresh interpreter: what an import loads, or patches, seen from nothing loaded."""

from __future__ import annotations

import subprocess
import sys


def python_prints(code: str) -> str:
    """What `python -c code` prints (stripped); raises CalledProcessError if it fails."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
