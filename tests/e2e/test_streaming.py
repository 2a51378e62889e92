"""Streaming fidelity (issue 22, items 1-3), through a real `rr run`: bodies of
any size and framing arrive byte for byte with rr's memory flat, events are
passed on as they come, compressed responses are scrubbed while they stream,
and timeouts cut off only what has stopped making progress."""

from __future__ import annotations

import hashlib
import html
import json
import re
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import httpx
import pytest

from rr_addon.policy.bodies import decode_content
from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.upstream import RawListener, blob_bytes, escaped

SECRET = "sk_stream_SECRET_0123456789"
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
  - name: mute
    hosts: ["127.0.0.1:{mute_port}"]
    allow_private_addresses: true
proxies:
  - name: agent
    targets: [{{target: api}}, {{target: mute}}]
    meters:
      - {{name: tokens, type: response_value, response_value: {{json_path: "$.usage.total_tokens"}}, when: {{path: "^/(usage|bytes)/"}}}}
    credentials: [{{name: a, auth: api_key, secret: KEY_s}}]
  - name: reader
    targets: [{{target: api}}]
    rules: [{{name: model, effect: deny, body: [{{json_path: "$.model", value: "^forbidden$"}}]}}]
    credentials: [{{name: r, auth: api_key, secret: KEY_r}}]
"""
MB = 1024 * 1024
FLAT = 60 * MB  # "flat": rr's resident memory grows by less than this during a transfer


class Mute(RawListener):
    """Accepts TCP connections and never says a word (a TLS handshake with it never completes)."""

    def one(self, conn):
        try:
            conn.recv(65536)
            time.sleep(30)
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture(scope="module")
def mute():
    m = Mute()
    yield m
    m.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory, upstream, mute):
    return prepare_home(tmp_path_factory.mktemp("rr-stream"), POLICY.format(port=upstream.port, mute_port=mute.port, secret=SECRET))


def start(home, pki, upstream, *args: str) -> ProxyProcess:
    p = ProxyProcess(home, upstream_ca=pki.ca_cert, args=list(args)).start()
    p.upstream = f"https://127.0.0.1:{upstream.port}"
    return p


@pytest.fixture(scope="module")
def proxy(home, upstream, pki):
    p = start(home, pki, upstream)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def quick(home, upstream, pki):
    """Short timeouts: connect 1 s, first byte 2 s, idle 2 s."""
    p = start(home, pki, upstream, "--set", "rr_connect_timeout=1", "--set", "rr_first_byte_timeout=2", "--set", "rr_idle_timeout=2")
    yield p
    p.stop()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Sampler:
    """rr's resident memory, sampled every 50 ms while a transfer runs."""

    def __init__(self, proxy):
        self.pid = proxy.proc.pid
        self.start = rss(self.pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        print(f"rr RSS {self.start / MB:.0f} MB -> peak {self.peak / MB:.0f} MB")  # shown with pytest -s

    @property
    def growth(self) -> int:
        return self.peak - self.start


def upload(proxy, pieces, *args: str, key: str = "KEY_s") -> tuple[int, bytes, bytes]:
    """`curl -T -` with `pieces` written to its standard input as curl reads it: (exit code, out, err)."""
    cmd = ["curl", "-sS", "--cacert", str(proxy.ca), "-x", proxy.url("agent", key), "-T", "-", *args]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:

        def feed():
            try:
                for piece in pieces:
                    p.stdin.write(piece)
            except BrokenPipeError:
                pass  # curl gave up; its exit code and error say why
            finally:
                p.stdin.close()

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        out = p.stdout.read()
        err = p.stderr.read()
        writer.join(60)
        return p.wait(60), out, err


def curl_h2(proxy, url: str, tmp) -> tuple[int, str, dict[str, str], bytes]:
    """GET over HTTP/2 to rr with curl (httpx does not negotiate HTTP/2 through a proxy
    tunnel): (status, HTTP version, response headers, the raw body as received)."""
    head, body = tmp / "head", tmp / "body"
    out = subprocess.run(
        ["curl", "-s", "--http2", "--cacert", str(proxy.ca), "-x", proxy.url("agent", "KEY_s"), "-D", str(head), "-o", str(body), "-w", "%{http_code} %{http_version}", url],
        capture_output=True, timeout=60, check=True,
    ).stdout.decode().split()
    headers = dict(line.split(": ", 1) for line in head.read_text().splitlines()[1:] if ": " in line)
    return int(out[0]), out[1], {k.lower(): v for k, v in headers.items()}, body.read_bytes()


def curl_h2_stream(proxy, url: str) -> subprocess.Popen:
    """curl -N over HTTP/2: its standard output passes the body on as it arrives."""
    return subprocess.Popen(
        ["curl", "-sN", "--http2", "--cacert", str(proxy.ca), "-x", proxy.url("agent", "KEY_s"), "-w", "\n%{http_version}", url],
        stdout=subprocess.PIPE,
    )


def warm(proxy) -> None:
    with client(proxy) as c:
        assert c.get(f"{proxy.upstream}/anything/warm").status_code == 200


def client(proxy) -> httpx.Client:
    """HTTP/1.1 (through a proxy tunnel httpx stays on HTTP/1.1 even when asked for HTTP/2: see curl_h2)."""
    return httpx.Client(proxy=proxy.url("agent", "KEY_s"), verify=ssl.create_default_context(cafile=str(proxy.ca)), timeout=60)


# ---------------------------------------------------------------------------- item 1: framing and memory


def test_upload_of_unknown_length_over_http2_streams_chunked_to_an_http1_upstream(proxy, upstream):
    """`curl --http2 -T -`: no content-length; the HTTP/1.1 upstream used to get an empty
    body (and rr buffered all of it). 100 MB arrive byte for byte, chunked, memory flat."""
    size = 100 * MB
    warm(proxy)
    expected = hashlib.sha256()
    for piece in blob_bytes(size):
        expected.update(piece)
    with Sampler(proxy) as mem:
        code, out, err = upload(proxy, blob_bytes(size), "--http2", f"{proxy.upstream}/sink")
    assert code == 0, err
    got = json.loads(out)
    assert got == {"bytes": size, "sha256": expected.hexdigest(), "framing": "chunked"}
    assert mem.growth < FLAT, f"rr grew by {mem.growth / MB:.0f} MB while streaming the upload"


def test_a_buffered_http2_body_of_unknown_length_gets_its_content_length(proxy, upstream):
    """A body rule reads the body, so rr buffers it; it leaves with a content-length."""
    body = b'{"model": "allowed", "pad": "' + b"x" * 5000 + b'"}'
    code, out, err = upload(proxy, [body], "--http2", f"{proxy.upstream}/sink", key="KEY_r")
    assert code == 0, err
    assert json.loads(out) == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "framing": "content-length"}
    _, out, _ = upload(proxy, [b'{"model": "forbidden"}'], "--http2", f"{proxy.upstream}/sink", key="KEY_r")
    assert json.loads(out)["error"]["code"] == "access-denied"  # the rule read it


def test_large_download_streams_byte_exact_with_flat_memory(proxy, upstream):
    size = 200 * MB
    warm(proxy)
    expected = hashlib.sha256()
    for piece in blob_bytes(size):
        expected.update(piece)
    got, n = hashlib.sha256(), 0
    with Sampler(proxy) as mem, client(proxy) as c, c.stream("GET", f"{proxy.upstream}/blob/{size}") as r:
        assert r.status_code == 200
        for chunk in r.iter_raw(1 << 20):
            got.update(chunk)
            n += len(chunk)
    assert (n, got.hexdigest()) == (size, expected.hexdigest())
    assert mem.growth < FLAT, f"rr grew by {mem.growth / MB:.0f} MB while streaming the download"


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_each_event_is_passed_on_before_the_next_is_sent(proxy, upstream, http2):
    """The upstream sends event i only after the client has seen event i-1 (its gate is
    released by the client): an event held back until the next chunk deadlocks the stream,
    and the gate's timeout turns that into a failure. The first chunk is a short
    `retry: 1000`, which an HTTP/1.1 client once received as the end of the body."""
    gate, n = uuid.uuid4().hex, 6
    received = b""
    seen = 0

    def saw(chunk: bytes) -> None:
        nonlocal received, seen
        received += chunk
        while received.count(b"\n\n") > seen:
            seen += 1
            if seen < n:
                upstream.gates.release(f"{gate}-{seen}")

    url = f"{proxy.upstream}/sse/ack?n={n}&gate={gate}"
    if http2:
        with curl_h2_stream(proxy, url) as p:
            while chunk := p.stdout.read1(65536):
                saw(chunk)
        received, _, version = received.rpartition(b"\n")
        assert version == b"2"
    else:
        with client(proxy) as c, c.stream("GET", url) as r:
            assert r.http_version == "HTTP/1.1"
            for chunk in r.iter_raw():
                saw(chunk)
    expected = b"retry: 1000\n\n" + b"".join(b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(1, n))
    assert received == expected
    assert all(upstream.gates.released_in_time[f"{gate}-{i}"] for i in range(1, n)), "an event waited for the next one"


# ---------------------------------------------------------------------------- item 3: timeouts


def test_a_stream_that_keeps_moving_is_not_cut_off(quick, upstream):
    """A byte every 0.5 s for 6 s: three times the idle timeout, never idle."""
    started = time.monotonic()
    with client(quick) as c:
        r = c.get(f"{quick.upstream}/drip/12?every=0.5")
    assert r.status_code == 200 and r.content == b"x" * 12
    assert time.monotonic() - started >= 5.5


def test_an_idle_stream_is_cut_off(quick, upstream):
    """10 bytes, then silence: the caller has the headers and the 10 bytes, then the body breaks off."""
    started = time.monotonic()
    received = b""
    with client(quick) as c, c.stream("GET", f"{quick.upstream}/stall/10") as r:
        assert r.status_code == 200
        with pytest.raises(httpx.HTTPError):
            for chunk in r.iter_raw():
                received += chunk
    assert received == b"x" * 10
    assert time.monotonic() - started < 20  # cut by rr, not by the upstream's 60 s
    quick.wait_for_log("rr cuts off 127.0.0.1: idle timeout: rr_idle_timeout is 2 s")


def test_no_response_headers_in_time_is_a_504_naming_the_timeout(quick, upstream):
    with client(quick) as c:
        r = c.get(f"{quick.upstream}/anything?wait=8")
    assert r.status_code == 504
    err = r.json()["error"]
    assert err["code"] == "upstream-timeout" and "rr_first_byte_timeout is 2 s" in err["message"]


def test_a_connection_that_never_completes_its_handshake_is_a_504(quick, mute):
    started = time.monotonic()
    with client(quick) as c:
        r = c.get(f"https://127.0.0.1:{mute.port}/x")
    assert r.status_code == 504
    err = r.json()["error"]
    assert err["code"] == "upstream-timeout" and "rr_connect_timeout is 1 s" in err["message"]
    assert time.monotonic() - started < 10


def test_the_old_option_still_works_and_says_what_replaces_it(home, upstream, pki):
    p = start(home, pki, upstream, "--set", "rr_upstream_timeout=2")
    try:
        p.wait_for_log("rr_upstream_timeout is deprecated")
        with client(p) as c:
            r = c.get(f"{p.upstream}/drip/8?every=0.5")  # 4 s, longer than the old total of 2 s
            assert r.status_code == 200 and r.content == b"x" * 8
            r = c.get(f"{p.upstream}/anything?wait=8")
            assert r.status_code == 504 and "rr_first_byte_timeout is 2 s" in r.json()["error"]["message"]
    finally:
        p.stop()


# ---------------------------------------------------------------------------- item 2: compressed responses


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "deflate"])
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_an_echoed_secret_is_scrubbed_from_a_compressed_response_that_stays_compressed(proxy, upstream, coding, http2, tmp_path):
    """The upstream echoes the injected Authorization in a compressed body written in
    7-byte pieces (the secret crosses chunks in the compressed and the decoded stream)."""
    url = f"{proxy.upstream}/echo-header/authorization?{coding}=1&pieces=7"
    if http2:
        status, version, headers, raw = curl_h2(proxy, url, tmp_path)
        assert version == "2"
    else:
        with client(proxy) as c, c.stream("GET", url) as r:
            raw = b"".join(r.iter_raw())
        status, headers = r.status_code, r.headers
    assert status == 200 and headers["content-encoding"] == coding
    body = decode_content(raw, coding, limit=MB)
    assert SECRET.encode() not in body and SECRET.encode() not in raw
    assert json.loads(body) == {"value": "Bearer [rr:api/live]**************"}


def decoded_every_way(body: bytes) -> str:
    """What a client could read out of `body`: JSON escapes, percent-encoding and HTML references undone."""
    text = body.decode()
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    return html.unescape(urllib.parse.unquote(text))


@pytest.mark.parametrize("style", ["json", "percent", "html", "mixed"])
@pytest.mark.parametrize("coding", [None, "gzip"])
def test_an_echoed_secret_is_scrubbed_from_a_stream_however_the_upstream_escapes_it(proxy, upstream, style, coding):
    """The upstream echoes the injected Authorization with every character escaped (`\\u0073`,
    `%73`, `&#115;`, or those in turn), streamed in 5-byte pieces with no redaction configured:
    rr used to match only the literal secret there, and the caller decoded it back."""
    url = f"{proxy.upstream}/echo-escaped/authorization?style={style}&pieces=5" + (f"&{coding}=1" if coding else "")
    with client(proxy) as c, c.stream("GET", url) as r:
        raw = b"".join(r.iter_raw())
    assert r.status_code == 200
    body = decode_content(raw, coding, limit=MB) if coding else raw
    assert SECRET not in decoded_every_way(body)
    assert decoded_every_way(body).startswith("Bearer [rr:api/live]")
    if not coding:  # the mask has the length of what it replaces: the announced framing holds
        assert len(body) == len(escaped("Bearer " + SECRET, style))


def test_a_large_compressed_response_is_not_capped_and_memory_stays_flat(proxy, upstream):
    """40 MB of zeros, gzip-encoded (~40 KB), from a target with an injected secret and
    no filters: rr used to decode it whole and refuse it over rr_buffer_limit (16 MiB)."""
    size = 40 * MB
    warm(proxy)
    n, raw = 0, 0
    with Sampler(proxy) as mem, client(proxy) as c, c.stream("GET", f"{proxy.upstream}/zeros/{size}?gzip=1") as r:
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        for chunk in r.iter_bytes():
            assert not chunk.strip(b"\0")
            n += len(chunk)
        raw = r.num_bytes_downloaded
    assert n == size and raw < MB  # delivered compressed
    assert mem.growth < FLAT, f"rr grew by {mem.growth / MB:.0f} MB"


def audit_record(proxy, request_id: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        for line in rr_cli(proxy.home, "audit", "--json", "--proxy", "agent").output.splitlines():
            if (rec := json.loads(line))["request_id"] == request_id:
                return rec
        assert time.monotonic() < deadline, f"no audit record for {request_id}"
        time.sleep(0.2)


def test_a_response_a_meter_reads_streams_on_and_is_measured_from_a_copy(proxy, upstream):
    """A response_value meter reads the JSON after the response; the response is not held
    back for it, so one larger than rr_buffer_limit (16 MiB) is delivered, unmeasured."""
    with client(proxy) as c:
        r = c.get(f"{proxy.upstream}/usage/7?gzip=1")  # compressed, from a target with a secret: read decoded
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip" and r.json() == {"usage": {"total_tokens": 7}}
        rec = audit_record(proxy, r.headers["rr-request-id"])
        assert rec["meters"] == ["tokens"] and rec["unmeasured"] is None
        with c.stream("GET", f"{proxy.upstream}/bytes/{20 * MB}") as big:
            n = sum(len(chunk) for chunk in big.iter_raw())
        assert big.status_code == 200 and n > 16 * MB
    assert audit_record(proxy, big.headers["rr-request-id"])["unmeasured"] == {"tokens": "too-large"}
    deadline = time.monotonic() + 5
    while True:  # the embedded counters are flushed every 250 ms
        rows = [json.loads(line) for line in rr_cli(proxy.home, "usage", "--proxy", "agent", "--json").output.splitlines()]
        day = next((r for r in rows if r["meter"] == "tokens" and r["window"] == "day"), None)
        if (day and day["used"], day and day["unmeasured"]) == (7, 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (day["used"], day["unmeasured"]) == (7, 1), rows
