"""Control planes for hybrid tests: a real `rr control-plane serve` process, or one served in-process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from rr_addon.testing.home import database_url
from rr_addon.testing.proxy import BIN, ProxyProcess, end_process, free_port, wait_for_port


class ControlPlaneProcess:
    """`rr control-plane serve` on a fixed port, so it can be stopped and started again at the same URL."""

    def __init__(self, home: Path, port: int | None = None):
        self.home = home
        self.port = port or free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = home / f"control-plane-{self.port}.log"
        self.cmd = [str(BIN / "rr"), "control-plane", "serve", "-p", str(self.port)]
        self.env = {**os.environ, "RR_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.env.pop("RR_DATABASE_URL", None)
        if url := database_url(home):  # RR_TEST_DATABASE=postgres: the home's own PostgreSQL database
            self.env["RR_DATABASE_URL"] = url
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ControlPlaneProcess:
        self._logf = self.log.open("ab")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, timeout, self.proc, self.log)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        end_process(self.proc, signal.SIGTERM, timeout)
        self._logf.close()
        self.proc = None

    def __enter__(self) -> ControlPlaneProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def dataplane(home: Path, bundle: Path, *, upstream_ca: Path | None = None, args: list[str] | None = None, name: str = "dataplane") -> ProxyProcess:
    """`rr run --dataplane-bundle BUNDLE` with its own home (no database anywhere near it)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"RR_DATABASE_URL": "", "RR_MASTER_KEY": ""}
    return ProxyProcess(home, upstream_ca=upstream_ca, args=["--dataplane-bundle", str(bundle), *(args or [])], env=env, name=name)


def state(home: Path) -> dict:
    try:
        return json.loads((home / "dataplane" / "state.json").read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def served_control_plane(home: Path):
    """A control plane served in this process, as `rr control-plane serve` serves it (its admin
    API and the CLI's handlers), for `home` (RR_HOME points there meanwhile). Yields
    (url, engine, admin credential file)."""
    from rr_addon import settings
    from rr_addon.cli import served
    from rr_addon.crypto import Keyring, master_keys
    from rr_addon.hybrid import server
    from rr_addon.hybrid.admin_api import install
    from rr_addon.store.db import make_engine
    from rr_addon.testing.home import rr_cli

    old = os.environ.get("RR_HOME")
    os.environ["RR_HOME"] = str(home)
    engine = make_engine(database_url(home) or f"sqlite:///{home / 'rr.db'}")  # RR_TEST_DATABASE=postgres: the home's PostgreSQL
    plane = server.ControlPlane(engine, Keyring(master_keys(settings.home())), interval=0.1)
    install(plane)
    plane.admin_handlers.update(served.handlers())
    srv = server.Server(("127.0.0.1", 0), plane, server.server_context(plane.keys, ["127.0.0.1"]))
    plane.start()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    url = f"https://127.0.0.1:{srv.server_address[1]}"
    admin = home / "ops.rr-admin.json"
    rr_cli(home, "control-plane", "issue-admin", "ops", "--url", url, "-o", str(admin))
    try:
        yield url, engine, admin
    finally:
        srv.shutdown()
        plane.stop()
        srv.server_close()
        engine.dispose()
        if old is None:
            os.environ.pop("RR_HOME", None)
        else:
            os.environ["RR_HOME"] = old
