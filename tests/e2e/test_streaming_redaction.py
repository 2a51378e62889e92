"""`redact` and filters on `text/event-stream` responses through a real `rr run`:
event by event while the stream streams (the caller sees early events before the
upstream sends the last one), compressed streams too, echoed secrets scrubbed
inside events, a value cut across TCP chunks still caught, and an event filters
cannot vouch for ends the stream; WebSocket messages are redacted in both directions."""

from __future__ import annotations

import json
import ssl
import subprocess
import uuid

import httpx
import pytest

from rr_addon.policy.bodies import zstd as _zstd
from rr_addon.testing.home import audit_record, prepare_home
from rr_addon.testing.proxy import ProxyProcess

ZstdDecompressor = _zstd.ZstdDecompressor
SECRET = "sk_stream_SECRET_123456"
POLICY = """
targets:
  - name: llm
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: redacting
    targets: [{{target: llm}}]
    redact: [{{detectors: [email], direction: both}}]
    credentials: [{{name: a, auth: api_key, secret: KEY_r}}]
  - name: filtering
    targets: [{{target: llm}}]
    filters: [{{destroy: ["$.model"]}}]
    credentials: [{{name: f, auth: api_key, secret: KEY_f}}]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki):
    home = prepare_home(tmp_path_factory.mktemp("rr-sse-redact"), POLICY.format(port=upstream.port, secret=SECRET))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        yield p


def client(proxy, name: str = "redacting", key: str = "KEY_r") -> httpx.Client:
    return httpx.Client(proxy=proxy.url(name, key), verify=ssl.create_default_context(cafile=str(proxy.ca)), timeout=30)


def stream_gated(c: httpx.Client, upstream, query: str, early: bytes = b"Hel") -> tuple[httpx.Response, bytes]:
    """The upstream holds its last event until this client has seen `early`: only a
    response rr passes on event by event can finish before the gate times out."""
    gate = uuid.uuid4().hex
    received = b""
    with c.stream("GET", f"https://127.0.0.1:{upstream.port}/sse/openai?{query}&gate={gate}") as r:
        # httpx's zstd decoder (python-zstandard's decompressobj) holds output back until
        # the frame ends: read zstd with the standard library's decompressor instead
        zstd = ZstdDecompressor() if r.headers.get("content-encoding") == "zstd" else None
        for chunk in r.iter_raw() if zstd is not None else r.iter_bytes():
            received += zstd.decompress(chunk) if zstd is not None else chunk
            if early in received:
                upstream.gates.release(gate)
        upstream.gates.release(gate)
    assert upstream.gates.released_in_time[gate], "the first event reached the client only after the stream ended: rr buffered it"
    return r, received



@pytest.mark.parametrize("extra", ["", "&split=1&crlf=1", "&gzip=1", "&br=1", "&zstd=1", "&deflate=1&split=1"])
def test_an_email_in_a_streamed_completion_reaches_the_caller_redacted_event_by_event(proxy, upstream, extra):
    with client(proxy) as c:
        r, received = stream_gated(c, upstream, f"say=write+to+alice@example.com+{SECRET}{extra}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert b"alice@example.com" not in received and b"example.com" not in received
    assert SECRET.encode() not in received  # an injected secret the upstream echoes is masked too
    assert b'"content":"write to [REDACTED:EMAIL] [rr:llm/live]' in received
    assert received.replace(b"\r\n", b"\n").endswith(b"data: [DONE]\n\n")
    assert audit_record(proxy.home, r.headers["rr-request-id"])["redactions"] == {"email": 1}


@pytest.mark.parametrize("extra", ["", "&gzip=1"])
def test_over_http2_with_curl_the_stream_is_redacted_event_by_event(proxy, upstream, extra):
    gate = uuid.uuid4().hex
    url = f"https://127.0.0.1:{upstream.port}/sse/openai?say=mail+bob@example.org{extra}&gate={gate}"
    cmd = ["curl", "-sS", "-N", "--http2", "--compressed", "--proxy", proxy.url("redacting", "KEY_r"), "--cacert", str(proxy.ca), "-w", "\n%{http_version}", url]
    received = b""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as curl:
        while chunk := curl.stdout.read1(65536):
            received += chunk
            if b"Hel" in received:
                upstream.gates.release(gate)
        upstream.gates.release(gate)
        assert curl.wait(30) == 0, curl.stderr.read()
    assert upstream.gates.released_in_time[gate], "the first event reached curl only after the stream ended: rr buffered it"
    assert received.endswith(b"data: [DONE]\n\n\n2")  # HTTP/2, and every event
    assert b"bob@example.org" not in received and b'"content":"mail [REDACTED:EMAIL]"' in received


def test_filters_apply_to_each_event_of_a_stream_as_it_streams(proxy, upstream):
    with client(proxy, "filtering", "KEY_f") as c:
        r, received = stream_gated(c, upstream, "split=1")
    events = [e for e in received.split(b"\n\n") if e.startswith(b"data: {")]
    assert len(events) == 4 and all(b"model" not in e for e in events)
    assert b"gpt-4o-mini" not in received and received.endswith(b"data: [DONE]\n\n")


def test_an_event_filters_cannot_read_ends_the_stream_with_an_error_and_never_looks_complete(proxy, upstream):
    received = b""
    with client(proxy, "filtering", "KEY_f") as c, pytest.raises(httpx.RemoteProtocolError):
        with c.stream("GET", f"https://127.0.0.1:{upstream.port}/sse/plain") as r:
            for chunk in r.iter_bytes():
                received += chunk
    assert r.status_code == 200 and b"hello" not in received
    name, data = received.split(b"\n")[:2]
    assert name == b"event: error"
    assert json.loads(data.removeprefix(b"data: "))["error"]["code"] == "unfilterable-response"


class WsMailer:
    """A TLS WebSocket server that greets with an address and echoes what it receives, recording it."""

    def __init__(self, pki):
        import asyncio
        import threading

        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.loop = asyncio.new_event_loop()
        self.received: list[str | bytes] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _handler(self, ws):
        await ws.send('{"greeting": "support is dora@example.com"}')
        async for message in ws:
            self.received.append(message)
            await ws.send(b"got it" if isinstance(message, bytes) else "got it")

    async def _start(self):
        from websockets.asyncio.server import serve

        self.server = await serve(self._handler, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    def close(self):
        import asyncio

        async def stop():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_websocket_messages_are_redacted_in_both_directions(tmp_path, pki):
    from websockets.sync.client import connect as ws_connect

    up = WsMailer(pki)
    try:
        home = prepare_home(tmp_path / "ws", POLICY.format(port=up.port, secret=SECRET))
        with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
            ctx = ssl.create_default_context(cafile=str(p.ca))
            with ws_connect(f"wss://127.0.0.1:{up.port}/chat", proxy=p.url("redacting", "KEY_r"), ssl=ctx, open_timeout=10) as ws:
                greeting = ws.recv(timeout=10)
                ws.send('{"prompt": "forward it to erin@example.com"}')
                ws.recv(timeout=10)
                ws.send(b"binary frank@example.com")
                ws.recv(timeout=10)
    finally:
        up.close()
    assert json.loads(greeting) == {"greeting": "support is [REDACTED:EMAIL]"}
    assert up.received == ['{"prompt":"forward it to [REDACTED:EMAIL]"}', b"binary [REDACTED:EMAIL]"]


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_an_upload_too_large_to_redact_is_refused_and_never_leaves(proxy, upstream, framing):
    from rr_addon.core import reasons

    marker = uuid.uuid4().hex
    body = b'{"prompt": "' + b"mail grace@example.com " * 60_000 + b'"}'  # 1.4 MB > rr_inspect_limit (1 MiB)

    def pieces():
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    with client(proxy) as c:
        r = c.post(f"https://127.0.0.1:{upstream.port}/anything/upload", content=pieces() if framing == "chunked" else body, headers={"x-marker": marker})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload-too-large" and reasons.BODY_OVER_REDACTION_LIMIT in r.json()["error"]["message"]
    assert [x for x in upstream.received if x.header("x-marker") == marker] == []


def test_a_hostile_upstream_cannot_hide_an_email_or_the_secret_behind_a_duplicate_json_key(proxy, upstream):
    escaped = SECRET[:-1] + "\\u%04x" % ord(SECRET[-1])
    events = [
        b'data: {"content":"alice@example.com","content":"hi"}\n\n',
        b'data: {"content":"' + escaped.encode() + b'","content":"hi"}\n\n',
        b"data: [DONE]\n\n",
    ]
    upstream.stream("/sse/dup-keys", lambda _r: (200, [("content-type", "text/event-stream")], iter(events)))
    with client(proxy) as c:
        r = c.get(f"https://127.0.0.1:{upstream.port}/sse/dup-keys")
    assert r.status_code == 200
    assert b"alice@example.com" not in r.content and escaped.encode() not in r.content
    assert r.content == b'data: {"content":"hi"}\n\ndata: {"content":"hi"}\n\ndata: [DONE]\n\n'
