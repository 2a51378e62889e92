"""Start a real `rr run` / `mitmdump -s rr_addon/addon.py` process for end-to-end tests, the demo and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ADDON = Path(__file__).resolve().parent.parent / "addon.py"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            raise RuntimeError(f"proxy exited with {proc.returncode} before listening:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def end_process(proc: subprocess.Popen, sig: int, timeout: float) -> int:
    """Send `sig` to a child still running and wait for it; one that is not gone
    after `timeout` seconds is killed. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class ProxyProcess:
    """`with ProxyProcess(home, upstream_ca=...) as p:` → p.port, p.url(user, secret), p.log_text()."""

    def __init__(
        self,
        home: Path,
        *,
        upstream_ca: Path | None = None,
        args: list[str] | None = None,
        web: bool = False,
        direct: bool = False,
        env: dict[str, str] | None = None,
        name: str = "proxy",
    ):
        self.home = home
        self.port = free_port()
        self.web_port = free_port() if web else None
        self.log = home / f"{name}-{self.port}.log"
        self.ca = home / "certs" / "mitmproxy-ca-cert.pem"
        extra = list(args or [])
        if upstream_ca is not None:
            extra += ["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
        if web:
            extra += ["--set", f"web_port={self.web_port}", "--set", "web_password=rr-test-password"]
        if direct:  # the documented plain-mitmproxy way
            tool = "mitmweb" if web else "mitmdump"
            self.cmd = [str(BIN / tool), "-s", str(ADDON), "--listen-host", "127.0.0.1", "-p", str(self.port), "--set", f"confdir={home / 'certs'}", *extra]
        else:
            self.cmd = [str(BIN / "rr"), "run", *(["--web"] if web else []), "-p", str(self.port), *extra]
        db_file = home / "database-url"  # a PostgreSQL database of this home (see rr_addon.testing.home)
        db = {"RR_DATABASE_URL": db_file.read_text().strip()} if db_file.exists() else {}
        self.env = {**os.environ, "RR_HOME": str(home), "PYTHONUNBUFFERED": "1", **db, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        self._logf = self.log.open("ab")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, timeout, self.proc, self.log)
        if self.web_port:
            wait_for_port(self.web_port, timeout, self.proc, self.log)
        return self

    def run_to_exit(self, timeout: float = 30.0) -> int:
        """For processes expected to refuse to start: wait for the exit code."""
        with self.log.open("ab") as logf:
            proc = subprocess.run(self.cmd, env=self.env, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout)
        return proc.returncode

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        end_process(self.proc, sig, timeout)
        self._logf.close()
        return self.proc.returncode

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, user: str | None = None, secret: str | None = None) -> str:
        if secret is None:
            return f"http://{self.address}"
        return f"http://{user or 'rr'}:{secret}@{self.address}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not in the proxy log after {timeout}s:\n{self.log_text()[-3000:]}")
