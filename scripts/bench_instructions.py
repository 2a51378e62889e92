"""Instructions per small request, rr against plain mitmdump, counted by valgrind's callgrind.

CPU time per request moves by ±10 % and more on a shared machine; instruction
counts do not depend on what else runs. This starts the benchmark's upstream and
rr home (scripts/bench.py: 1,000 targets, 10,000 credentials, filters and
redaction active), then for each proxy: starts it under callgrind with
instrumentation off, sends a warm-up over 4 keep-alive connections (CONNECT +
TLS, the benchmark's request), switches instrumentation on for N requests,
dumps, and reports the instructions per request: the whole process's, and the
main thread's alone (the event loop: the background threads' share — rr's audit
and counter writers — is partly per unit of time, and valgrind slows time down
~50×, so it is inflated and varies between runs). Slow: ~1.5 min per proxy.

    .venv/bin/python scripts/bench_instructions.py [--requests 200] [--path /v1/small] [PROXY ...]

PROXY is `plain` (mitmdump, as the benchmark runs it), `rr` (this tree's
`python -m rr_addon.mitm.runner`) or the path of another checkout of rr (its
runner runs from there: an old and a new tree side by side). Default: plain rr.
The last line is JSON: {proxy: {"all": instructions per request, "loop": the main thread's}}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import glob
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402
from bench import BIN, LOAD_HOSTS, SMALL, free_port  # noqa: E402

CONNS = 4


async def _connect(port: int, up_port: int, ca: str, i: int, creds: list, path: str):
    host = LOAD_HOSTS[i % len(LOAD_HOSTS)]
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    user, secret = creds[i]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
    writer.write(f"CONNECT {host}:{up_port} HTTP/1.1\r\nhost: {host}:{up_port}\r\nproxy-authorization: Basic {auth}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"CONNECT refused: {head[:80]!r}")
    await writer.start_tls(ctx, server_hostname=host)
    request = f"GET {path} HTTP/1.1\r\nhost: {host}:{up_port}\r\nuser-agent: rr-bench/1\r\naccept: application/json\r\naccept-encoding: identity\r\nx-request-id: ins-{i}\r\n\r\n"
    return reader, writer, request.encode()


async def _send(conns: list, n: int) -> None:
    async def one(conn):
        reader, writer, request = conn
        for _ in range(n):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:100]!r}")
            await reader.readexactly(bench._content_length(head))

    await asyncio.gather(*(one(c) for c in conns))


def measure(proxy: str, *, home: Path, pki, up_port: int, creds: list, requests: int, path: str, work: Path) -> dict[str, int]:
    if proxy == "plain":
        exe, cwd = [str(BIN / "mitmdump")], work
    else:
        exe, cwd = [sys.executable, "-m", "rr_addon.mitm.runner"], ROOT if proxy == "rr" else Path(proxy)  # `-m` runs the tree in cwd
    port = free_port()
    out = work / f"callgrind.{len(list(work.glob('callgrind.*')))}"
    cmd = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes", f"--callgrind-out-file={out}", *exe,
        "-p", str(port), "--listen-host", "127.0.0.1", "--set", f"confdir={home / 'certs'}",
        "--set", "connection_strategy=lazy", "--set", f"ssl_verify_upstream_trusted_ca={pki.ca_cert}",
    ]  # fmt: skip
    env = {**os.environ, "RR_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for var in ("RR_DATABASE_URL", "RR_MASTER_KEY", "PYTHONPATH"):
        env.pop(var, None)
    log = (work / f"{out.name}.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    per_conn = max(1, requests // CONNS)

    def control(*args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(proc.pid)], check=True, capture_output=True)

    async def main() -> None:
        bench.wait_port(port, proc, work / f"{out.name}.log", timeout=600)
        conns = [await _connect(port, up_port, str(home / "certs" / "mitmproxy-ca-cert.pem"), i, creds, path) for i in range(CONNS)]
        await _send(conns, 15)  # warm-up: instrumentation off
        control("-i", "on")
        await _send(conns, per_conn)
        control("-d")
        control("-i", "off")
        for _, writer, _ in conns:
            writer.close()

    try:
        asyncio.run(main())
        # one file per thread of the dump: <out>.1-01 is the main thread (the event loop)
        by_thread = {}
        for d in glob.glob(f"{out}.1-*"):
            totals = [int(line.split()[1]) for line in Path(d).read_text().splitlines() if line.startswith("totals:")]
            by_thread[d.rsplit("-", 1)[1]] = totals[0] if totals else 0
        if not by_thread:
            raise RuntimeError(f"no callgrind dump for {proxy}")
        n = per_conn * CONNS
        return {"all": round(sum(by_thread.values()) / n), "loop": round(by_thread.get("01", 0) / n), "threads": {k: round(v / n) for k, v in sorted(by_thread.items())}}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("proxies", nargs="*", default=["plain", "rr"])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--path", default=SMALL, help=f"{SMALL} (default) or {bench.BIG}")
    a = ap.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed", file=sys.stderr)
        return 2

    import bench_decision as bd
    from rr_addon.testing.certs import make_pki
    from rr_addon.testing.home import rr_cli

    work = Path(tempfile.mkdtemp(prefix="rr-instructions-"))
    upstream = None
    try:
        pki = make_pki(work / "pki", names=("localhost", *LOAD_HOSTS))
        up_port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, bench.__file__, "_upstream", "--port", str(up_port), "--cert", str(pki.server_cert), "--key", str(pki.server_key)],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert upstream.stdout is not None
        if upstream.stdout.readline().strip() != "ready":
            raise RuntimeError("upstream did not start")
        sections, _ = bd.accepted_sections()
        text, creds = bench.policy_yaml(sections, up_port)
        home = work / "home"
        home.mkdir()
        (home / "policy.yaml").write_text(text)
        rr_cli(home, "init")
        rr_cli(home, "apply", "-f", str(home / "policy.yaml"))
        results = {}
        for proxy in a.proxies:
            t0 = time.monotonic()
            results[proxy] = measure(proxy, home=home, pki=pki, up_port=up_port, creds=creds, requests=a.requests, path=a.path, work=work)
            r = results[proxy]
            print(f"{proxy}: {r['all']:,} instructions per request, {r['loop']:,} of them on the event loop's thread ({time.monotonic() - t0:.0f} s)", flush=True)
        print(json.dumps(results))
        return 0
    finally:
        if upstream is not None:
            upstream.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
