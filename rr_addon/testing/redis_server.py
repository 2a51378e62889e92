"""A Redis server of a test's own (`redis-server` on a free loopback port), to stop and
start again under a running proxy: outages and empty restarts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from rr_addon.testing.proxy import free_port
from rr_addon.testing.wait import eventually


def available() -> bool:
    return shutil.which("redis-server") is not None


class OwnRedis:
    """`OwnRedis(dir).start()`; `.url`; `.stop()` and `.start()` again on the same port
    (nothing saved: it comes back empty)."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )
        with redis.Redis(port=self.port, socket_connect_timeout=0.2) as client:

            def answers() -> bool:
                try:
                    return bool(client.ping())
                except redis.ConnectionError:
                    return False

            eventually(answers, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)
