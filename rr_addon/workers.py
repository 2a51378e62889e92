"""`rr run --workers N`: N mitmdump processes serving one port, supervised (docs/performance.md: workers).

mitmproxy runs on one core. With N > 1, `rr run` becomes a supervisor that
starts N workers (`python -m rr_addon.workers ARGS`, each a complete
`rr run` data plane). Each worker's listening socket has SO_REUSEPORT, so the
kernel spreads new connections over the workers' accept queues; a connection
stays with the worker that accepted it. What the workers share, they share
through what several `rr run` processes always shared: the configuration and
the audit trail in the database (each worker loads and reloads the
configuration itself), and the meter counters in Redis — required when N > 1,
because the embedded counters are exact within one process only.

A worker that dies after it was listening is started again; one that exits
before it ever listened (a bad option, a port in use, a broken configuration)
stops the whole supervisor with its exit status, as a single `rr run` would.
SIGINT/SIGTERM to the supervisor go to every worker; a worker gets SIGTERM if
the supervisor itself dies (PR_SET_PDEATHSIG).

mitmweb (`--web`) stays one process: its flow list and options live in it.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any, Iterable

READY_FD = "RR_WORKER_READY_FD"  # the pipe a worker reports "listening" on
WORKER = "RR_WORKER"  # the worker's number (1..N), for its logs
RESTART_PAUSE = 0.5  # seconds between a worker's death and its replacement


class WorkersError(Exception):
    """A --workers value or combination that cannot run; the message says why."""


# --------------------------------------------------------------------------
# How many


def count(requested: int | None, *, web: bool, args: list[str], env: dict[str, str] | None = None) -> int:
    """The number of worker processes for `rr run [--web] --workers requested ARGS`.
    Default: one. More is opt-in: per-process limits (client connections per address,
    held approvals) multiply with the workers, which an operator must choose knowingly."""
    env = os.environ if env is None else env
    shared = bool(_set_option(args, "rr_redis_url") or env.get("RR_REDIS_URL"))
    if requested is None:
        return 1
    if requested < 1:
        raise WorkersError(f"--workers must be 1 or more, not {requested}")
    if requested > 1 and web:
        raise WorkersError("--workers: mitmweb (--web) runs as one process (its flow list and options live in it); leave out --workers or --web")
    if requested > 1 and not shared:
        raise WorkersError(
            f"--workers {requested} needs meter counters in Redis (RR_REDIS_URL or --set rr_redis_url=...): "
            "the embedded counters are exact within one process only"
        )
    return requested


def _set_option(args: Iterable[str], name: str) -> str | None:
    """The last `--set name=value` of a mitmproxy command line (None when absent)."""
    value = None
    items = list(args)
    for i, arg in enumerate(items):
        spec = items[i + 1] if arg == "--set" and i + 1 < len(items) else arg[6:] if arg.startswith("--set=") else None
        if spec is not None and spec.partition("=")[0] == name:
            value = spec.partition("=")[2]
    return value


def worker_args(args: list[str], n: int, i: int) -> list[str]:
    """Worker i's command line: the user's, with one metrics port per worker
    (rr_metrics_port + i - 1; mitmproxy refuses two values for one option, so
    the user's is replaced)."""
    port = _set_option(args, "rr_metrics_port")
    if n == 1 or not port or not port.isdigit() or not int(port):
        return list(args)
    out = list(args)
    spec = f"rr_metrics_port={int(port) + i - 1}"
    for j, arg in enumerate(out):
        if arg == "--set" and j + 1 < len(out) and out[j + 1].partition("=")[0] == "rr_metrics_port":
            out[j + 1] = spec
        elif arg.startswith("--set=") and arg[6:].partition("=")[0] == "rr_metrics_port":
            out[j] = "--set=" + spec
    return out


# --------------------------------------------------------------------------
# The supervisor


class Supervisor:
    def __init__(self, args: list[str], n: int, *, env: dict[str, str] | None = None):
        self.args = args
        self.n = n
        self.env = dict(os.environ if env is None else env)
        self.procs: dict[int, subprocess.Popen] = {}
        self.ready: dict[int, int] = {}  # worker number -> read end of its readiness pipe (until it reports)
        self.stopping = False

    def check(self) -> None:
        """Refuse what cannot be shared by N processes before starting any."""
        from rr_addon.mitm import runner

        address = runner.where(self.args, web=False).address
        if address.rpartition(":")[2] == "0":
            raise WorkersError("--workers needs a fixed listen port (-p PORT): with port 0 every worker would listen on a different one")

    def start(self, i: int) -> None:
        r, w = os.pipe()
        env = {**self.env, READY_FD: str(w), WORKER: str(i)}
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "rr_addon.workers", *worker_args(self.args, self.n, i)],
            env=env,
            pass_fds=(w,),
            preexec_fn=_die_with_parent,
        )
        os.close(w)
        self.ready[i] = r
        print(f"rr: worker {i} of {self.n} started (pid {self.procs[i].pid})", file=sys.stderr, flush=True)

    def run(self) -> int:
        self.check()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        for i in range(1, self.n + 1):
            self.start(i)
        try:
            while True:
                if self.stopping:
                    return self._wait_all()
                self._collect_ready()
                for i, proc in list(self.procs.items()):
                    code = proc.poll()
                    if code is None or self.stopping:
                        continue
                    if i in self.ready:  # died before it ever listened: a start-up error
                        os.close(self.ready.pop(i))
                        print(f"rr: worker {i} exited with {code} before listening; stopping", file=sys.stderr, flush=True)
                        self._stop(signal.SIGTERM, None)
                        self._wait_all()
                        return code if code > 0 else 1
                    print(f"rr: worker {i} (pid {proc.pid}) exited with {code}; starting it again", file=sys.stderr, flush=True)
                    time.sleep(RESTART_PAUSE)
                    if not self.stopping:
                        self.start(i)
                _wait(list(self.ready.values()), 0.5)
        finally:
            for r in self.ready.values():
                os.close(r)
            self.ready.clear()

    def _collect_ready(self) -> None:
        for i, r in list(self.ready.items()):
            readable, _, _ = select.select([r], [], [], 0)
            if readable and os.read(r, 1):
                os.close(self.ready.pop(i))
                print(f"rr: worker {i} listening", file=sys.stderr, flush=True)

    def _stop(self, signum: int, _frame: Any) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def _wait_all(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return 0


def _wait(fds: list[int], timeout: float) -> None:
    """Sleep until a readiness pipe has news or `timeout` passes (deaths are polled)."""
    try:
        select.select(fds, [], [], timeout)
    except InterruptedError:  # a signal: the loop looks at `stopping`
        pass


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def supervise(args: list[str], n: int) -> int:
    return Supervisor(args, n).run()


# --------------------------------------------------------------------------
# A worker


def enable_reuse_port() -> None:
    """This process's proxy servers bind with SO_REUSEPORT (rr_addon.mitm.patches), and
    the first one to listen tells the supervisor (READY_FD)."""
    from rr_addon.mitm import patches

    ready = os.environ.pop(READY_FD, None)

    def listening() -> None:
        if ready is not None:
            os.write(int(ready), b"1")
            os.close(int(ready))

    patches.listen_with_reuse_port(listening)


def main(argv: list[str] | None = None) -> int:
    from rr_addon.mitm import runner

    enable_reuse_port()
    args = list(sys.argv[1:] if argv is None else argv)
    return runner.run(args, web=False, base=runner.defaults(web=False))


if __name__ == "__main__":
    sys.exit(main())
