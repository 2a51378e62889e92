"""A local TLS upstream that records every request it receives and echoes it
back as JSON. Used by the end-to-end tests, `scripts/demo` and the benchmark.

Paths:
  /anything...        echo {method, path, headers, body}
  /status/<code>      that status, with the echo
  /bytes/<n>          a JSON document of about n bytes
  /echo-header/<h>    returns the named request header's value in the body and in the x-echoed header
  /usage/<n>          {"usage": {"total_tokens": n}} (for response_value meters)
  /sse/openai, /sse/anthropic, /sse/plain
                      text/event-stream, chunked, one event per chunk (see `sse_events`);
                      ?delay=S between events, ?gate=NAME holds the last event until
                      `Upstream.release(NAME)`, ?crlf=1 CRLF line ends, ?split=1 cuts every
                      event across two chunks, ?break=1 drops the connection before the end
  /text/...           text/plain with an email, a card number and the Authorization it got
  ?gzip=1             on any path: the body gzip-encoded
  /bomb/gzip, /bomb/br  64 MB of JSON compressed (decompression bombs)
  /deep               JSON nested 100,000 levels deep
  /lie                says application/json, sends HTML
"""

from __future__ import annotations

import functools
import gzip
import json
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import brotli

from rr_addon.testing.certs import TestPKI


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


@dataclass
class Recorder:
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, r: Received) -> None:
        with self.lock:
            self.requests.append(r)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


def big_document(size: int) -> bytes:
    item = {"id": "cus_0000000000", "email": "someone@example.com", "card": "4242424242424242", "note": "x" * 40}
    one = len(json.dumps(item)) + 2
    return json.dumps({"object": "list", "data": [dict(item, id=f"cus_{i:010d}") for i in range(max(1, size // one))]}).encode()


@functools.lru_cache(maxsize=None)
def _bomb(kind: str) -> tuple[str, bytes]:
    """64 MB of JSON that compresses to a few hundred KB or less."""
    raw = b'{"a": "' + b"0" * (64 * 1024 * 1024) + b'"}'
    return ("gzip", gzip.compress(raw, 9)) if kind == "gzip" else ("br", brotli.compress(raw, quality=5))


BOMBS = {"/bomb/gzip": lambda: _bomb("gzip"), "/bomb/br": lambda: _bomb("br")}


def sse_events(kind: str, q: dict[str, str]) -> list[bytes]:
    """The events of an OpenAI-shaped (`stream_options.include_usage`: usage once, in the
    last chunk), Anthropic-shaped (`message_start` input tokens, cumulative output
    tokens in `message_delta`) or non-JSON stream, each with its blank line."""
    if kind == "openai":
        prompt, completion = int(q.get("prompt", 7)), int(q.get("completion", 5))
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "usage": None}
        docs = [dict(chunk, choices=[{"index": 0, "delta": {"content": w}}]) for w in ("Hel", "lo", " there")]
        docs.append(dict(chunk, choices=[], usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}))
        out = [b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs]
        return [b": keep-alive\n\n"] + out + [b"data: [DONE]\n\n"]
    if kind == "anthropic":
        inp, output = int(q.get("input", 11)), int(q.get("output", 9))
        events = [
            ("message_start", {"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "usage": {"input_tokens": inp, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        return [f"event: {name}\ndata: {json.dumps(d)}\n\n".encode() for name, d in events]
    return [b"data: hello\n\n", b"data: not json either\ndata: {\n\n", b"data: [DONE]\n\n"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    recorder: Recorder
    gates: Gates

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline()

    def _handle(self) -> None:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = self._read_chunked()
        else:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
        rec = Received(self.command, self.path, list(self.headers.items()), body)
        self.recorder.add(rec)
        status = 200
        path = self.path.split("?")[0]
        if path.startswith("/sse/"):
            self._event_stream(path.rsplit("/", 1)[1], dict(urllib.parse.parse_qsl(self.path.partition("?")[2])))
            return
        if path.startswith("/bytes/"):
            payload = big_document(int(path.rsplit("/", 1)[1]))
        elif path in BOMBS:
            encoding, payload = BOMBS[path]()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", encoding)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        elif path == "/deep":
            payload = b"[" * 100_000 + b"]" * 100_000
        elif path == "/lie":
            payload = b"<html><body>this is not JSON, someone@example.com</body></html>"
        elif path.startswith("/text/"):
            payload = b"hello someone@example.com, card 4242 4242 4242 4242, echo " + (self.headers.get("authorization") or "").encode()
        elif path.startswith("/usage/"):
            payload = json.dumps({"usage": {"total_tokens": int(path.rsplit("/", 1)[1])}}).encode()
        elif path.startswith("/echo-header/"):
            payload = json.dumps({"value": self.headers.get(path.rsplit("/", 1)[1])}).encode()
        else:
            if path.startswith("/status/"):
                status = int(path.rsplit("/", 1)[1])
            payload = json.dumps(
                {"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body.decode("utf-8", "replace")}
            ).encode()
        query = self.path.partition("?")[2]
        encoding = None
        if "gzip=1" in query.split("&"):
            payload, encoding = gzip.compress(payload), "gzip"
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8" if path.startswith("/text/") else "application/json")
        if encoding:
            self.send_header("content-encoding", encoding)
        self.send_header("content-length", str(len(payload)))
        if path.startswith("/echo-header/"):
            self.send_header("x-echoed", self.headers.get(path.rsplit("/", 1)[1]) or "")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _event_stream(self, kind: str, q: dict[str, str]) -> None:
        events = sse_events(kind, q)
        if q.get("crlf"):
            events = [e.replace(b"\n", b"\r\n") for e in events]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        delay = float(q.get("delay", 0))
        for i, event in enumerate(events):
            if i == len(events) - 1:
                if q.get("break"):
                    self.close_connection = True  # no last event, no terminating chunk: a broken stream
                    return
                if q.get("gate"):
                    self.gates.wait(q["gate"])
            elif i and delay:
                time.sleep(delay)
            pieces = [event[: len(event) // 2 + 1], event[len(event) // 2 + 1 :]] if q.get("split") else [event]
            for piece in pieces:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class Gates:
    """Named events a streaming response waits at (`?gate=NAME`) until a test releases them."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.released_in_time: dict[str, bool] = {}  # NAME -> whether the release came before the timeout

    def _get(self, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def wait(self, name: str) -> None:
        self.released_in_time[name] = self._get(name).wait(self.timeout)

    def release(self, name: str) -> None:
        self._get(name).set()


class Upstream:
    """`with Upstream(pki) as up:` serves on 127.0.0.1:<up.port>."""

    def __init__(self, pki: TestPKI | None, host: str = "127.0.0.1", port: int = 0):
        """Serves TLS with `pki`, or plain HTTP when pki is None."""
        self.recorder = Recorder()
        self.gates = Gates()
        self.server_names: list[str | None] = []  # the TLS SNI of each connection, as received
        handler = type("Handler", (_Handler,), {"recorder": self.recorder, "gates": self.gates})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        if pki is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(pki.server_cert, pki.server_key)
            ctx.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="upstream", daemon=True)

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def received(self) -> list[Received]:
        return self.recorder.snapshot()


class RawListener:
    """A plain TCP listener on 127.0.0.1 handing each connection to `one` in its own thread
    (subclasses decide how to misbehave); `close()` stops it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(conn,), daemon=True).start()

    def one(self, conn) -> None:
        conn.close()

    def close(self) -> None:
        self.sock.close()
