"""`rr status` in a hybrid data plane's home: there is no database to list data
planes from, so it shows what the data plane last wrote about itself
(`$RR_HOME/dataplane/state.json`): its configuration version, whether it is
current or stale (and since when), the control plane, undelivered audit records."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.text import Text

from rr_addon import settings
from rr_addon.core.terminal import printable
from rr_addon.hybrid.link import STATE, directory


def state_file(home: Path) -> Path | None:
    """The state file when `home` is a data plane's home without a database of its own."""
    path = directory(home) / STATE
    if not path.is_file() or os.environ.get("RR_DATABASE_URL") or (home / "rr.db").exists():
        return None
    return path


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(path: Path) -> dict:
    doc = json.loads(path.read_text())
    doc["running"] = _alive(doc.get("pid"))
    return doc


def summary(doc: dict) -> Text:
    name = printable(doc.get("dataplane") or "?")
    version = doc.get("config_version")
    text = Text(f"data plane {name} ({'running' if doc.get('running') else 'not running'}), configuration version {version} ")
    source = "from the control plane" if doc.get("config_source") == "control-plane" else "from its cache"
    text.append(source + ", ")
    if doc.get("stale"):
        text.append(f"stale since {printable(doc.get('stale_since') or '?')}", style="bold red")
        if doc.get("revoked"):
            text.append(" (revoked by the control plane)", style="bold red")
        elif doc.get("error"):
            text.append(f" ({printable(doc['error'])})", style="red")
    else:
        text.append("current", style="green")
    text.append(f"; control plane {printable(doc.get('control_plane') or '?')}, last contact {printable(doc.get('last_contact') or 'never')}")
    pending = doc.get("undelivered_audit") or 0
    text.append(f"; {pending} audit record{'s' if pending != 1 else ''} not yet delivered", style="yellow" if pending else "")
    return text


def show(path: Path, as_json: bool, console) -> None:
    doc = read(path)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        console.print(summary(doc), soft_wrap=True)


def here() -> Path | None:
    return state_file(settings.home())
