"""A local TLS upstream that records every request it receives and echoes it
back as JSON. Used by the end-to-end tests, `scripts/demo` and the benchmark.

Paths:
  /anything...        echo {method, path, headers, body}
  /status/<code>      that status, with the echo
  /bytes/<n>          a JSON document of about n bytes
  /echo-header/<h>    returns the named request header's value in the body and in the x-echoed header
  /echo-escaped/<h>?style=json|percent|html|mixed
                      returns that header's value with every character escaped that way (text/plain)
  /usage/<n>          {"usage": {"total_tokens": n}} (for response_value meters)
  /sse/openai, /sse/anthropic, /sse/plain
                      text/event-stream, chunked, one event per chunk (see `sse_events`);
                      ?delay=S between events, ?gate=NAME holds the last event until
                      `Upstream.release(NAME)`, ?crlf=1 CRLF line ends, ?split=1 cuts every
                      event across two chunks, ?break=1 drops the connection before the end,
                      ?say=TEXT the second word of /sse/openai, ?gzip=1 (br, zstd, deflate)
                      the stream encoded so, flushed after every event
  /text/...           text/plain with an email, a card number and the Authorization it got (?ctype= another label, empty: none)
  ?gzip=1             on any path: the body gzip-encoded
  /bomb/gzip, /bomb/br  64 MB of JSON compressed (decompression bombs)
  /sink               reads the body as it arrives (any framing) and answers
                      {"bytes", "sha256", "framing"} without keeping it
  /blob/<n>           n bytes of `blob_bytes` with content-length, written 64 KiB at a time
  /zeros/<n>          n zero bytes, application/json, content-length (use with ?gzip=1, ?br=1)
  /sse/ack?n=N&gate=G N events, the first a short `retry: 1000`; event i (i >= 1) is
                      sent only once the test released gate `G-i` (it saw event i-1)
  /drip/<n>?every=S   n bytes, chunked, one every S seconds
  /stall/<n>          n bytes at once, then nothing for 60 s before the end
  ?wait=S             on any path: answer only after S seconds
  ?gzip=1, ?br=1, ?zstd=1, ?deflate=1
                      on most paths: the body encoded so; with ?pieces=N written in
                      N-byte chunked pieces (a secret in it crosses chunks)
  /deep               JSON nested 100,000 levels deep
  /lie                says application/json, sends HTML
  Upstream.answer(path, fn) replaces the echo for one exact path (no query) with
  fn(Received) -> (status, content type, body): vendor-shaped answers for the
  recipes' tests; Upstream.stream(path, fn) the same, streamed chunk by chunk
  (rr_addon.testing.vendors: OpenAI- and Anthropic-shaped event streams).
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable

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


def escaped(value: str, style: str) -> str:
    """`value` with every character escaped as an echoing encoder might (`mixed`: the styles in turn)."""
    styles = {
        "json": lambda c: "".join(f"\\u{int.from_bytes(u, 'big'):04x}" for u in itertools.batched(c.encode("utf-16-be"), 2)),
        "percent": lambda c: "".join(f"%{b:02X}" for b in c.encode()),
        "html": lambda c: f"&#{ord(c)};",
        "slash": lambda c: "\\/" if c == "/" else c,
    }
    if style == "mixed":
        order = [styles["json"], styles["percent"], styles["html"], lambda c: c]
        return "".join(order[i % 4](c) for i, c in enumerate(value))
    return "".join(styles[style](c) for c in value)


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


BLOCK = 1 << 16


@functools.lru_cache(maxsize=1)
def _block() -> bytes:
    import random

    return random.Random(22).randbytes(BLOCK)


def blob_bytes(n: int):
    """n deterministic, incompressible bytes, BLOCK at a time."""
    block = _block()
    for start in range(0, n, BLOCK):
        yield block[: min(BLOCK, n - start)]


def encode(payload: bytes, coding: str) -> bytes:
    if coding == "gzip":
        return gzip.compress(payload, 6)
    if coding == "br":
        return brotli.compress(payload, quality=4)
    if coding == "deflate":
        return zlib.compress(payload)
    from backports import zstd

    return zstd.compress(payload)


@functools.lru_cache(maxsize=4)
def _zeros(n: int, coding: str) -> bytes:
    return encode(b"\0" * n, coding)


def sse_events(kind: str, q: dict[str, str]) -> list[bytes]:
    """The events of an OpenAI-shaped (`stream_options.include_usage`: usage once, in the
    last chunk), Anthropic-shaped (`message_start` input tokens, cumulative output
    tokens in `message_delta`) or non-JSON stream, each with its blank line."""
    if kind == "openai":
        prompt, completion = int(q.get("prompt", 7)), int(q.get("completion", 5))
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "usage": None}
        words = ("Hel", q.get("say", "lo"), " there")
        docs = [dict(chunk, choices=[{"index": 0, "delta": {"content": w}}]) for w in words]
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


Answer = Callable[[Received], tuple[int, str, bytes]]
Streamed = Callable[[Received], "tuple[int, list[tuple[str, str]], Iterable[bytes]]"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    recorder: Recorder
    gates: Gates
    answers: dict[str, Answer]

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

    def _sink(self) -> None:
        import hashlib

        digest, total = hashlib.sha256(), 0
        chunked = "chunked" in (self.headers.get("transfer-encoding") or "").lower()
        length = self.headers.get("content-length")

        def take(size: int) -> None:
            nonlocal total
            while size:
                piece = self.rfile.read(min(size, 1 << 16))
                if not piece:
                    raise ConnectionError("body cut short")
                digest.update(piece)
                total += len(piece)
                size -= len(piece)

        if chunked:
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                take(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
        elif length:
            take(int(length))
        framing = "chunked" if chunked else "content-length" if length else "none"
        self.recorder.add(Received(self.command, self.path, list(self.headers.items()), b""))
        payload = json.dumps({"bytes": total, "sha256": digest.hexdigest(), "framing": framing}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _write_chunked(self, pieces) -> None:
        for piece in pieces:
            if piece:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _slow(self, path: str, q: dict[str, str]) -> None:
        n = int(path.rsplit("/", 1)[1])
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            if path.startswith("/drip/"):
                every = float(q.get("every", 1))
                for i in range(n):
                    if i:
                        time.sleep(every)
                    self.wfile.write(b"1\r\nx\r\n")
                    self.wfile.flush()
            else:
                self.wfile.write(b"%x\r\n%s\r\n" % (n, b"x" * n))
                self.wfile.flush()
                time.sleep(60)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def _blob(self, n: int) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(n))
        self.end_headers()
        try:
            for piece in blob_bytes(n):
                self.wfile.write(piece)
        except OSError:
            self.close_connection = True

    def _handle(self) -> None:
        path = self.path.split("?")[0]
        q = dict(urllib.parse.parse_qsl(self.path.partition("?")[2]))
        if q.get("wait"):  # on any path: answer only after this many seconds
            time.sleep(float(q["wait"]))
        if path.startswith("/sink"):
            return self._sink()
        if path.startswith(("/drip/", "/stall/")):
            return self._slow(path, q)
        if path.startswith("/blob/"):
            return self._blob(int(path.rsplit("/", 1)[1]))
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = self._read_chunked()
        else:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
        rec = Received(self.command, self.path, list(self.headers.items()), body)
        self.recorder.add(rec)
        status = 200
        path = self.path.split("?")[0]
        streamed = self.streams.get(path)
        if streamed is not None:
            status, headers, pieces = streamed(rec)
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self._write_chunked(pieces)
            return
        answer = self.answers.get(path)
        if answer is not None:
            status, content_type, payload = answer(rec)
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
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
        elif path.startswith("/zeros/"):
            n = int(path.rsplit("/", 1)[1])
            coding = next((c for c in ("gzip", "br", "zstd", "deflate") if q.get(c)), None)
            payload = _zeros(n, coding) if coding else b"\0" * n
            self.send_response(200)
            self.send_header("content-type", "application/json")
            if coding:
                self.send_header("content-encoding", coding)
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
        elif path.startswith("/echo-escaped/"):
            payload = escaped(self.headers.get(path.rsplit("/", 1)[1]) or "", q.get("style", "json")).encode()
        else:
            if path.startswith("/status/"):
                status = int(path.rsplit("/", 1)[1])
            payload = json.dumps(
                {"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body.decode("utf-8", "replace")}
            ).encode()
        encoding = next((c for c in ("gzip", "br", "zstd", "deflate") if q.get(c) == "1"), None)
        if encoding:
            payload = encode(payload, encoding)
        pieces = int(q.get("pieces", 0))
        self.send_response(status)
        ctype = "text/plain; charset=utf-8" if path.startswith(("/text/", "/echo-escaped/")) else "application/json"
        ctype = q.get("ctype", ctype)  # ?ctype= (empty: no Content-Type at all)
        if ctype:
            self.send_header("content-type", ctype)
        if encoding:
            self.send_header("content-encoding", encoding)
        if pieces:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(len(payload)))
        if path.startswith("/echo-header/"):
            self.send_header("x-echoed", self.headers.get(path.rsplit("/", 1)[1]) or "")
        self.end_headers()
        if self.command != "HEAD":
            if pieces:
                self._write_chunked(payload[i : i + pieces] for i in range(0, len(payload), pieces))
            else:
                self.wfile.write(payload)

    def _event_stream(self, kind: str, q: dict[str, str]) -> None:
        if kind == "ack":
            return self._acknowledged_stream(int(q.get("n", 5)), q["gate"])
        events = sse_events(kind, q)
        if q.get("crlf"):
            events = [e.replace(b"\n", b"\r\n") for e in events]
        coding = next((c for c in ("gzip", "br", "zstd", "deflate") if q.get(c) == "1"), None)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        if coding:
            from rr_addon.core.recode import _Encoder

            encoder = _Encoder(coding)  # each event flushed: decodable as soon as it arrives
            events = [encoder.put(e) + encoder.flush() for e in events]
            events[-1] += encoder.finish()
            self.send_header("content-encoding", coding)
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

    def _acknowledged_stream(self, n: int, gate: str) -> None:
        """Event i leaves only once the client has seen event i-1: a proxy that holds an
        event back until the next one arrives deadlocks this stream (bounded by the gate timeout)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def events():
            yield b"retry: 1000\n\n"  # shorter than any held-back tail used to be
            for i in range(1, n):
                self.gates.wait(f"{gate}-{i}")
                yield b"id: %d\ndata: event %d\n\n" % (i, i)

        self._write_chunked(events())

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


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A client (or rr cutting an exchange off) hanging up is routine here; printing it would
        # also land in the output of an in-process `rr` command that runs at that moment.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Upstream:
    """`with Upstream(pki) as up:` serves on 127.0.0.1:<up.port>."""

    def __init__(self, pki: TestPKI | None, host: str = "127.0.0.1", port: int = 0):
        """Serves TLS with `pki`, or plain HTTP when pki is None."""
        self.recorder = Recorder()
        self.gates = Gates()
        self.server_names: list[str | None] = []  # the TLS SNI of each connection, as received
        self.answers: dict[str, Answer] = {}
        self.streams: dict[str, Streamed] = {}
        handler = type("Handler", (_Handler,), {"recorder": self.recorder, "gates": self.gates, "answers": self.answers, "streams": self.streams})
        self.server = _Server((host, port), handler)
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

    def answer(self, path: str, fn: Answer) -> None:
        """Answer requests for exactly `path` (query ignored) with fn(request) instead of the echo."""
        self.answers[path] = fn

    def stream(self, path: str, fn: Streamed) -> None:
        """Answer requests for exactly `path` with fn(request) -> (status, headers, pieces): each
        piece is written as one chunk and flushed (a generator may wait on `gates` between them)."""
        self.streams[path] = fn

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
