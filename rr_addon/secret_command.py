"""Run a secret's `command` (`{command: [..], timeout: S, refresh: S}`): the
secret is what it prints on standard output.

Never through a shell: the list is the argv. Its standard input is empty, its
standard error is discarded (a failing vault CLI may print what it read, so rr
logs only the exit status), and its output goes to an anonymous temporary file
rather than a pipe, so a child that leaves a grandchild holding the pipe open
cannot hang rr. It runs in a session of its own; at the timeout the whole
session is killed. The value is the output with trailing newlines dropped; an
empty output, one over 1 MiB, or output that is not UTF-8 is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from typing import Sequence

MAX_OUTPUT = 1 << 20


def run(command: Sequence[str], timeout: float) -> str:
    """The secret the command prints. Raises ValueError with a sentence (never the output)."""
    name = command[0]
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        except OSError as e:
            raise ValueError(f"secret command {name}: cannot run it: {e.strerror or e}") from None
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise ValueError(f"secret command {name}: no answer within {timeout:g} s (killed)") from None
        if status != 0:
            raise ValueError(f"secret command {name}: exited with status {status}")
        out.seek(0)
        raw = out.read(MAX_OUTPUT + 1)
    if len(raw) > MAX_OUTPUT:
        raise ValueError(f"secret command {name}: printed more than {MAX_OUTPUT} bytes")
    try:
        value = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError(f"secret command {name}: printed something that is not UTF-8") from None
    if not value:
        raise ValueError(f"secret command {name}: printed nothing")
    return value


def _kill(proc: subprocess.Popen) -> None:
    # its own session: the command and what it started. Not yet reaped, so the group id is still ours.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
