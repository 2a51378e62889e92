"""Hostile requests and responses (issue 9): each is answered cleanly — an error
with the right status, nothing forwarded — and the proxy keeps serving. Where
mitmproxy itself rejects a shape before rr sees it, the test says so."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import subprocess
import ssl
import threading
import time
import uuid
import zlib
from urllib.parse import unquote

import httpx
import pytest

from rr_addon.core import reasons
from rr_addon.policy.scrub import mask
from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.upstream import BOMBS, RawListener
from rr_addon.testing.wait import eventually

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_hostile_SECRET}}]
  - name: filtered
    hosts: ["localhost:{port}"]
    allow_private_addresses: true
    filters: [{{destroy: ["$.secret"]}}]
  - name: raw
    hosts: ["127.0.0.1:{raw_port}"]
    schemes: [http]
    allow_private_addresses: true
  - name: slow
    hosts: ["127.0.0.1:{slow_port}"]
    schemes: [http]
    allow_private_addresses: true
    filters: [{{destroy: ["$.x"]}}]
proxies:
  - name: agent
    targets: [{{target: api}}, {{target: filtered}}, {{target: raw}}, {{target: slow}}]
    rules: [{{name: model, effect: deny, methods: [POST], body: [{{json_path: "$.model", value: "^forbidden$"}}]}}]
    credentials: [{{name: a, auth: api_key, secret: KEY_h}}]
"""


BadUpstream = RawListener


class Misbehaving(BadUpstream):
    """Announces a body and resets the connection halfway."""

    def one(self, conn):
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"partial\": ")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        finally:
            conn.close()  # RST


class Slow(BadUpstream):
    """Never answers (/silent), or drips a few bytes of its body half a second apart and then stalls (/drip)."""

    def one(self, conn):
        try:
            head = conn.recv(65536)
            if b"/drip" in head:
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n")
                for _ in range(4):
                    conn.sendall(b" ")
                    time.sleep(0.5)  # well within the 2 s idle timeout
            time.sleep(60)
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture(scope="module")
def slow():
    s = Slow()
    yield s
    s.sock.close()


@pytest.fixture(scope="module")
def raw():
    m = Misbehaving()
    yield m
    m.sock.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki, raw, slow):
    home = tmp_path_factory.mktemp("rr-hostile")
    prepare_home(home, POLICY.format(port=upstream.port, raw_port=raw.port, slow_port=slow.port))
    args = ["--set", "rr_buffer_limit=1000000", "--set", "rr_first_byte_timeout=2", "--set", "rr_idle_timeout=2", "--set", "rr_max_client_connections=8"]
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=args) as p:
        p.slow_port = slow.port
        p.upstream_port = upstream.port
        yield p


def raw_exchange(proxy, request: bytes, host="127.0.0.1") -> tuple[int | None, bytes]:
    """Send `request` byte-exact inside an authenticated tunnel; (status, body) or (None, b"") if closed."""
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as s:
        s.sendall(f"CONNECT {host}:{proxy.upstream_port} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer KEY_h\r\n\r\n".encode())
        connect = http.client.HTTPResponse(s, method="CONNECT")
        connect.begin()
        assert connect.status == 200
        with ctx.wrap_socket(s, server_hostname=host) as tls:
            tls.sendall(request)
            resp = http.client.HTTPResponse(tls)
            try:
                resp.begin()
            except (http.client.RemoteDisconnected, ConnectionResetError):
                return None, b""
            return resp.status, resp.read()


def still_serving(proxy):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", "KEY_h"), verify=verify, timeout=10) as c:
        assert c.get(f"https://127.0.0.1:{proxy.upstream_port}/anything/ok").status_code == 200


def forwarded(upstream, marker):
    return [r for r in upstream.received if marker in r.path]


# ---------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    "head, expect",
    [
        # mitmproxy relays a bare CR and obs-fold inside a value; rr refuses them (they split headers downstream)
        (b"GET /{m} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\rb\r\n\r\n", "rr-400"),
        (b"GET /{m} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Folded: a\r\n b\r\n\r\n", "rr-400"),
        # mitmproxy's HTTP/1 parser refuses these before any hook runs: 400, nothing forwarded
        (b"POST /{m} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "mitmproxy-400"),
        (b"GET /{m} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "mitmproxy-400"),
        # rr answers these itself
        (b"GET /{m}/%2e%2e/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "rr-400"),
        (b"GET /{m}/%00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "rr-400"),
        # bytes that are not UTF-8 in a header value are relayed as bytes, not a crash
        (b"GET /{m} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Name: \xff\xfe\x80\r\n\r\n", "forwarded"),
    ],
    ids=["cr-in-value", "obs-fold", "cl-and-te", "two-content-lengths", "encoded-dot-segment", "nul", "invalid-utf8"],
)
def test_hostile_request_shapes(proxy, upstream, head, expect):
    marker = uuid.uuid4().hex
    status, body = raw_exchange(proxy, head.replace(b"{m}", marker.encode()))
    got = forwarded(upstream, marker)
    if expect == "forwarded":
        assert status == 200 and len(got) == 1
    else:
        assert status == 400 and got == []
        if expect == "rr-400":
            assert json.loads(body)["error"]["code"] == "invalid-request"
    still_serving(proxy)


@pytest.mark.parametrize(
    "body, content_type, status",
    [
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),  # depth 100,000: no RecursionError escapes
        (b'{"model": 1e999999, "n": 123456789012345678901234567890}', "application/json", 200),
        (b'{"model": "\xff\xfe"}', "application/json", 400),
        (b"", "application/json", 200),
        (b'{"model": "forbidden"}', "application/json", 403),
        (b"\xff\xfe\xfd not text", "text/plain", 200),
    ],
    ids=["deep-json", "huge-numbers", "invalid-utf8-json", "empty", "denied-by-body-rule", "binary-text"],
)
def test_hostile_bodies(proxy, upstream, body, content_type, status):
    marker = uuid.uuid4().hex
    head = f"POST /anything/{marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    got_status, _ = raw_exchange(proxy, head + body)
    assert got_status == status
    assert len(forwarded(upstream, marker)) == (1 if status == 200 else 0)


def test_chunked_request_body_reaches_body_rules(proxy, upstream):
    marker = uuid.uuid4().hex
    payload = b'{"model": "forbidden"}'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(payload[i : i + 5]), payload[i : i + 5]) for i in range(0, len(payload), 5)) + b"0\r\n\r\n"
    head = f"POST /anything/{marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    status, body = raw_exchange(proxy, head + chunks)
    assert status == 403 and json.loads(body)["error"]["code"] == "access-denied"
    assert forwarded(upstream, marker) == []


def test_gzip_bomb_in_a_request_stops_at_the_inspection_limit(proxy, upstream):
    import gzip

    marker = uuid.uuid4().hex
    bomb = gzip.compress(b'{"model": "' + b"a" * (32 * 1024 * 1024) + b'"}', 9)
    head = f"POST /anything/{marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n".encode()
    status, body = raw_exchange(proxy, head + bomb)
    assert status == 413 and json.loads(body)["error"]["code"] == "payload-too-large"
    assert forwarded(upstream, marker) == []


@pytest.mark.parametrize(
    "token",
    [
        "Bearer " + "x" * 100_000,
        "Bearer " + base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": "k" * 20_000}).encode()).decode().rstrip("=") + ".e30.sig",
    ],
    ids=["oversize-token", "absurd-kid"],
)
def test_absurd_tokens(proxy, upstream, token):
    marker = uuid.uuid4().hex
    status, body = raw_exchange(proxy, f"GET /anything/{marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-RR-Authorization: {token}\r\n\r\n".encode())
    assert status == 200  # the tunnel's own credential is valid; the absurd header is dropped, never forwarded
    (got,) = forwarded(upstream, marker)
    assert got.header("X-RR-Authorization") is None


# ---------------------------------------------------------------------------- responses


@pytest.mark.parametrize("path", ["/bomb/gzip", "/bomb/br"])
def test_decompression_bombs_are_capped(proxy, path):
    BOMBS[path]()  # compress the bomb before asking: under load, compressing 64 MB outlasts the proxy's 2 s first-byte timeout
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", "KEY_h"), verify=verify, timeout=30) as c:
        r = c.get(f"https://localhost:{proxy.upstream_port}{path}")  # the filtered target must decode it
    assert r.status_code == 502 and r.json()["error"]["code"] == "response-too-large"
    still_serving(proxy)


@pytest.mark.parametrize("path, code", [("/lie", "unfilterable-response"), ("/deep", "unfilterable-response")])
def test_bodies_that_lie_or_nest_too_deep(proxy, path, code):
    verify = ssl.create_default_context(cafile=str(proxy.ca))
    with httpx.Client(proxy=proxy.url("agent", "KEY_h"), verify=verify, timeout=30) as c:
        r = c.get(f"https://localhost:{proxy.upstream_port}{path}")
    assert r.status_code == 422 and r.json()["error"]["code"] == code
    assert "someone@example.com" not in r.text


def test_upstream_reset_mid_body(proxy, raw):
    with httpx.Client(proxy=proxy.url("agent", "KEY_h"), timeout=15) as c:
        try:
            r = c.get(f"http://127.0.0.1:{raw.port}/x")
        except httpx.HTTPError:
            r = None  # the body was streamed and broke off: the connection is closed, nothing more to say
    if r is not None:
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream-unavailable"
    still_serving(proxy)


@pytest.mark.parametrize(
    ("path", "timeout"),
    [("/silent", "first byte timeout: rr_first_byte_timeout is 2 s"), ("/drip", "idle timeout: rr_idle_timeout is 2 s")],
    ids=["never-answers", "drip-then-stall-filtered"],
)
def test_slow_upstream_is_cut_off_with_504(proxy, path, timeout):
    with httpx.Client(proxy=proxy.url("agent", "KEY_h"), timeout=30) as c:
        r = c.get(f"http://127.0.0.1:{proxy.slow_port}{path}")
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream-timeout"
    assert timeout in r.json()["error"]["message"]  # cut by rr's own timeout, not by the upstream (60 s)
    still_serving(proxy)


def _held_connection(proxy) -> socket.socket | None:
    """A connection the proxy has taken in and keeps open (it answered a request on it), or None if refused."""
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    s.sendall(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = http.client.HTTPResponse(s, method="GET")
    try:
        answer.begin()
        answer.read()
        return s
    except (http.client.RemoteDisconnected, ConnectionResetError):
        s.close()
        return None
    finally:
        answer.close()


def test_per_client_connection_limit(proxy):
    held: list[socket.socket] = []
    try:
        # Eight connections the proxy answered and keeps (a connection of an earlier test
        # that the proxy has not yet seen closed can hold a slot for a moment: retry).

        def eight_held() -> bool:
            if (s := _held_connection(proxy)) is not None:
                held.append(s)
            return len(held) == 8

        eventually(eight_held, what="eight held connections")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as extra:
            try:
                extra.sendall(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = extra.recv(1024)
            except ConnectionResetError:
                answer = b""
        assert answer == b""  # closed at once, nothing answered
    finally:
        for s in held:
            s.close()
    # a slot is free again once the proxy has seen the closes

    def slot_free() -> bool:
        if (s := _held_connection(proxy)) is None:
            return False
        s.close()
        return True

    eventually(slot_free, what="a free connection slot")
    still_serving(proxy)


# ---------------------------------------------------------------------------- a hostile upstream echoes the secret
# (from the attacker's pass, tests/e2e/test_redteam.py of the redteam branch)

ECHO_SECRET = "sk_echo_SECRET_7171"
ECHO_POLICY = """
targets:
  - name: one
    hosts: {hosts}
    schemes: [http, https]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: agent
    targets: [{{target: one}}]
    credentials: [{{name: a, auth: api_key, secret: KEY_e}}]
"""


def echo_policy(*ports: int) -> str:
    return ECHO_POLICY.format(hosts=json.dumps([f"127.0.0.1:{p}" for p in ports]), secret=ECHO_SECRET)


class CodedEcho(RawListener):
    """A plain-HTTP upstream echoing the Authorization it received in a body whose
    Content-Encoding and bytes the request path chooses (`/<shape>/<content-encoding>`);
    over TLS when given a PKI."""

    def __init__(self, pki=None):
        self.heads: list[bytes] = []
        self.stalled_until_closed: bool | None = None
        self.ctx = None
        if pki is not None:
            self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ctx.load_cert_chain(pki.server_cert, pki.server_key)
        super().__init__()

    def one(self, conn):
        try:
            if self.ctx is not None:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0]
            self.heads.append(head)
            path = head.split(b" ")[1].decode()
            auth = next((v.strip() for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:]) if k.strip().lower() == b"authorization"), b"")
            shape, coding = unquote(path).split("/")[1:3]
            plain = b'{"you_sent": "' + auth + b'"}'
            if shape == "stalls":  # a valid start, then corrupt bytes, then silence on an open connection
                z = zlib.compressobj(6, zlib.DEFLATED, 31)
                start = z.compress(plain) + z.flush(zlib.Z_SYNC_FLUSH)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
                    + b"%x\r\n%s\r\n" % (len(start), start) + b"20\r\n" + b"\xff" * 32 + b"\r\n"
                )
                conn.settimeout(60)
                self.stalled_until_closed = conn.recv(1) == b""  # rr closes it; a timeout raises
                return
            body = {
                "truncated": lambda: gzip.compress(plain)[:-8],  # deflate data complete, CRC/size trailer missing
                "corrupt": lambda: gzip.compress(plain)[:-20] + b"\xff" * 40,  # breaks inside the deflate data
                "garbage": lambda: b"\x1f\x8b not compressed at all " + auth,  # fails at the first bytes
                "gzipped": lambda: gzip.compress(plain),  # valid gzip, whatever the label says
            }[shape]()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: " + coding.encode()
                + b"\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
            )
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


@pytest.fixture(scope="module")
def echo_proxy(tmp_path_factory, pki):
    up, tls = CodedEcho(), CodedEcho(pki)
    home = tmp_path_factory.mktemp("rr-echo")
    prepare_home(home, echo_policy(up.port, tls.port))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        p.echo, p.echo_tls = up, tls
        yield p
    up.close()
    tls.close()


def echo_get(proxy, shape: str, coding: str) -> tuple[httpx.Response, bytes, Exception | None]:
    """(response, the raw bytes the caller received, the error that ended the body if any)."""
    got, broke = bytearray(), None
    with httpx.Client(proxy=proxy.url("agent", "KEY_e"), timeout=10) as c:
        with c.stream("GET", f"http://127.0.0.1:{proxy.echo.port}/{shape}/{coding}") as r:
            try:
                for piece in r.iter_raw():
                    got += piece
            except httpx.RemoteProtocolError as e:
                broke = e
    assert any(b"Bearer " + ECHO_SECRET.encode() in h for h in proxy.echo.heads)  # the upstream got it
    return r, bytes(got), broke


def echo_curl_http2(proxy, shape: str, coding: str, tmp_path) -> tuple[str, bytes, int]:
    """(response head, raw body, curl's exit status) of one HTTP/2 request in a tunnel to the TLS upstream."""
    head, body = tmp_path / "head", tmp_path / "body"
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--proxy", proxy.url("agent", "KEY_e"), "--cacert", str(proxy.ca), "-D", str(head), "-o", str(body),
         f"https://127.0.0.1:{proxy.echo_tls.port}/{shape}/{coding}"],
        capture_output=True, timeout=20,
    )
    assert any(b"Bearer " + ECHO_SECRET.encode() in h for h in proxy.echo_tls.heads)  # the upstream got it
    final = head.read_text().replace("\r\n", "\n").strip().split("\n\n")[-1]  # after the CONNECT's answer
    return final, body.read_bytes() if body.exists() else b"", out.returncode


@pytest.mark.parametrize("shape", ["truncated", "corrupt"])
def test_a_compressed_body_that_stops_decoding_after_bytes_went_out_is_cut(echo_proxy, shape):
    """rr decodes, scrubs and encodes a compressed response as it streams; when the body stops
    decoding, what went out was scrubbed and nothing more is passed on — and the caller's
    connection is cut instead of the body ending cleanly, so no client takes it for complete.
    (The attacker's reproduction: a gzip body without its CRC trailer; before streaming
    decode rr scrubbed the compressed bytes and the caller inflated the secret.)"""
    r, raw, broke = echo_get(echo_proxy, shape, "gzip")
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    readable = zlib.decompressobj(31).decompress(raw)
    assert ECHO_SECRET.encode() not in readable and ECHO_SECRET.encode() not in raw
    if shape == "truncated":
        assert readable.startswith(b'{"you_sent": "Bearer [rr:one/live]'), readable
    assert isinstance(broke, httpx.RemoteProtocolError), "the body ended cleanly: it must be cut"
    still_serving_echo(echo_proxy)


def test_a_body_that_stops_decoding_is_cut_at_once_not_when_the_upstream_ends(echo_proxy):
    """The upstream sends a valid start, corrupt bytes, then nothing more on an open connection:
    rr stops reading it and cuts the caller then (the caller is not left waiting for an upstream
    whose rest rr would never pass on; before, it waited until the upstream ended it)."""
    r, raw, broke = echo_get(echo_proxy, "stalls", "gzip")
    assert isinstance(broke, httpx.RemoteProtocolError), broke  # cut, not a read timeout (10 s)
    readable = zlib.decompressobj(31).decompress(raw)
    assert readable == b'{"you_sent": "Bearer ' + mask(ECHO_SECRET.encode(), b"[rr:one/live]") + b'"}', readable
    eventually(lambda: echo_proxy.echo.stalled_until_closed is not None, what="the stalled upstream's end")
    assert echo_proxy.echo.stalled_until_closed is True  # rr closed the upstream connection


def test_a_compressed_body_that_fails_before_any_byte_went_out_is_a_502(echo_proxy):
    """Nothing decodable came before the failure: the response headers were still held back,
    so the caller gets rr's answer (502 upstream-unavailable) rather than a 200 that is empty or cut."""
    r, raw, broke = echo_get(echo_proxy, "garbage", "gzip")
    assert broke is None
    assert r.status_code == 502, (r.status_code, raw)
    error = json.loads(raw)["error"]
    assert error["code"] == "upstream-unavailable"
    assert error["message"].startswith(reasons.RESPONSE_BODY_UNSCRUBBABLE)
    assert ECHO_SECRET.encode() not in raw


@pytest.mark.parametrize("coding", ["x-custom", "compress", "gzip, x-custom"])
def test_a_content_encoding_rr_cannot_decode_is_refused_when_a_secret_could_be_echoed(echo_proxy, coding):
    """A coding rr cannot undo (unknown, `compress`, or one unknown in a stack) could carry the
    echoed secret to a caller that can: the response is refused with 502, its body never passed
    on. (The upstream here sends gzip labelled otherwise — a caller that knows the label inflates it.)"""
    r, raw, broke = echo_get(echo_proxy, "gzipped", coding)
    assert broke is None
    assert r.status_code == 502, (r.status_code, raw)
    error = json.loads(raw)["error"]
    assert error["code"] == "upstream-unavailable"
    assert error["message"].startswith(reasons.RESPONSE_ENCODING_UNSCRUBBABLE)
    assert ECHO_SECRET.encode() not in raw


def test_over_http2_a_body_that_stops_decoding_resets_the_stream_or_is_a_502(echo_proxy, tmp_path):
    """The same over HTTP/2 end to end: after bytes went out the caller's stream is reset (curl:
    exit 92, stream not closed cleanly), what it got holds no secret; before, it is a 502."""
    head, raw, status = echo_curl_http2(echo_proxy, "truncated", "gzip", tmp_path)
    assert head.startswith("HTTP/2 200") and "content-encoding: gzip" in head, head
    assert status == 92, status
    readable = zlib.decompressobj(31).decompress(raw)
    assert readable.startswith(b'{"you_sent": "Bearer [rr:one/live]'), readable
    assert ECHO_SECRET.encode() not in readable
    head, raw, status = echo_curl_http2(echo_proxy, "garbage", "gzip", tmp_path)
    assert head.startswith("HTTP/2 502"), head
    assert status == 0 and json.loads(raw)["error"]["message"].startswith(reasons.RESPONSE_BODY_UNSCRUBBABLE)


def test_a_stacked_coding_that_does_not_decode_is_refused(echo_proxy):
    """`gzip, gzip` is a stack rr can undo (read whole); one that does not decode is refused (502),
    never passed on as the upstream sent it."""
    r, raw, broke = echo_get(echo_proxy, "gzipped", "gzip, gzip")
    assert r.status_code == 502, (r.status_code, raw)
    assert json.loads(raw)["error"]["message"].startswith(reasons.RESPONSE_BODY_UNSCRUBBABLE)


def still_serving_echo(proxy):
    r, raw, broke = echo_get(proxy, "gzipped", "gzip")
    assert broke is None and r.status_code == 200
    assert json.loads(zlib.decompressobj(31).decompress(raw)) == {"you_sent": "Bearer " + mask(ECHO_SECRET.encode(), b"[rr:one/live]").decode()}


class TrailerEcho(RawListener):
    """An HTTP/2 TLS upstream answering every request with a small JSON body and a trailer
    `x-echo` holding the Authorization it received (gRPC and many APIs send trailers)."""

    def __init__(self, pki):
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.ctx.set_alpn_protocols(["h2"])
        self.seen: list[str] = []
        super().__init__()

    def one(self, raw):
        import h2.config
        import h2.connection
        import h2.events

        conn = None
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
            h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
            h2c.initiate_connection()
            conn.sendall(h2c.data_to_send())
            while data := conn.recv(65536):
                for ev in h2c.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        auth = dict(ev.headers).get("authorization", "")
                        self.seen.append(auth)
                        h2c.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/json")])
                        h2c.send_data(ev.stream_id, b'{"ok": true}')
                        h2c.send_headers(ev.stream_id, [("x-echo", auth)], end_stream=True)
                conn.sendall(h2c.data_to_send())
        except (OSError, ssl.SSLError):
            pass
        finally:
            (conn or raw).close()


def web_views(p) -> str:
    """Everything mitmweb's REST API shows of its flows: the list, and each flow's WebSocket messages."""
    with httpx.Client(base_url=f"http://127.0.0.1:{p.web_port}", headers={"authorization": "Bearer rr-test-password"}, timeout=10) as api:
        listed = api.get("/flows")
        assert listed.status_code == 200, listed.text
        shown = [listed.text]
        for f in listed.json():
            if f.get("websocket"):
                shown.append(api.get(f"/flows/{f['id']}/messages/content/raw.json").text)
    return "\n".join(shown)


def test_a_secret_echoed_in_response_trailers_is_scrubbed(tmp_path, pki):
    """An HTTP/2 upstream echoes the Authorization it got in a response trailer: the caller
    (HTTP/2 end to end) gets the trailer with the secret masked, like a header, and so does mitmweb."""
    up = TrailerEcho(pki)
    try:
        prepare_home(tmp_path, echo_policy(up.port))
        with ProxyProcess(tmp_path, upstream_ca=pki.ca_cert, web=True, direct=True, args=["--set", "web_open_browser=false"]) as p:
            out = subprocess.run(
                ["curl", "-sS", "-v", "--http2", "--proxy", p.url("agent", "KEY_e"), "--cacert", str(p.ca), "-D", "-", f"https://127.0.0.1:{up.port}/echo"],
                capture_output=True, text=True, timeout=20,
            )
            shown = web_views(p)
    finally:
        up.close()
    assert '"trailers"' in shown and "[rr:one/live]" in shown and ECHO_SECRET not in shown, shown
    assert up.seen == [f"Bearer {ECHO_SECRET}"]  # the upstream got the secret, as it should
    assert '{"ok": true}' in out.stdout, out.stdout + out.stderr
    assert ECHO_SECRET not in out.stdout + out.stderr
    assert f"x-echo: Bearer {mask(ECHO_SECRET.encode(), b'[rr:one/live]').decode()}" in out.stdout, out.stdout


class WsTellsAuthorization:
    """A TLS WebSocket server whose first message is the Authorization its upgrade carried
    ("connected as …" greetings and echo/debug endpoints do this); it echoes what it gets."""

    def __init__(self, pki):
        import asyncio

        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.loop = asyncio.new_event_loop()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _handler(self, ws):
        auth = ws.request.headers.get("Authorization", "")
        self.seen.append(auth)
        await ws.send(f"connected with {auth}")
        await ws.send(f"binary {auth}".encode())
        async for message in ws:
            await ws.send(f"echo:{message}")

    async def _start(self):
        from websockets.asyncio.server import serve

        self.server = await serve(self._handler, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self):
        self.server.close()
        await self.server.wait_closed()

    def close(self):
        import asyncio

        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_a_secret_echoed_in_a_websocket_message_is_scrubbed(tmp_path, pki):
    """After an upgrade rr governed and injected, the upstream tells the upgrade's Authorization
    in a text and a binary message: the caller, and mitmweb, get both with the secret masked;
    the caller's own messages pass unchanged."""
    from websockets.sync.client import connect as ws_connect

    up = WsTellsAuthorization(pki)
    try:
        prepare_home(tmp_path, echo_policy(up.port))
        with ProxyProcess(tmp_path, upstream_ca=pki.ca_cert, web=True, direct=True, args=["--set", "web_open_browser=false"]) as p:
            ctx = ssl.create_default_context(cafile=str(p.ca))
            with ws_connect(f"wss://127.0.0.1:{up.port}/chat", proxy=p.url("agent", "KEY_e"), ssl=ctx, open_timeout=10) as ws:
                greeting, binary = ws.recv(timeout=10), ws.recv(timeout=10)
                ws.send("hello [rr:one/live]")
                echoed = ws.recv(timeout=10)
                shown = web_views(p)  # while the WebSocket is open
    finally:
        up.close()
    assert "connected with Bearer [rr:one/live]" in shown and ECHO_SECRET not in shown, shown
    masked = f"Bearer {mask(ECHO_SECRET.encode(), b'[rr:one/live]').decode()}"
    assert up.seen == [f"Bearer {ECHO_SECRET}"]  # the upstream got the secret, as it should
    assert greeting == f"connected with {masked}", greeting
    assert binary == f"binary {masked}".encode(), binary
    assert echoed == "echo:hello [rr:one/live]"
