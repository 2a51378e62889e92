"""Adversarial: an HTTP/2 client that resets the stream of a held request (RST_STREAM,
the connection stays open). Over HTTP/1.1 leaving means closing the connection, which
withdraws the hold; over HTTP/2 a client cancels one request and keeps the connection.
If the hold is not withdrawn, it keeps a slot of rr_max_held_requests until its timeout
(a caller fills the cap and nobody of its proxy is held any more: 429), and an approver
who approves it sends a request nobody waits for."""

from __future__ import annotations

import base64
import socket
import ssl
import uuid

import pytest

from rr_addon.testing.home import audit_record
from rr_addon.testing.wait import eventually
from tests.e2e.test_approvals import CALLER_KEY, CAP, Call, cli, forwarded, hook, pending, proxy, wait_pending  # noqa: F401

h2 = pytest.importorskip("h2.connection")
import h2.config  # noqa: E402
import h2.events  # noqa: E402


class H2Client:
    """One HTTP/2 connection through rr's CONNECT, kept open."""

    def __init__(self, p):
        port = p.upstream_port
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        auth = base64.b64encode(f"agent:{CALLER_KEY}".encode()).decode()
        s.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 200"), head
        ctx = ssl.create_default_context(cafile=str(p.ca))
        ctx.set_alpn_protocols(["h2"])
        self.tls = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        assert self.tls.selected_alpn_protocol() == "h2", self.tls.selected_alpn_protocol()
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.tls.sendall(self.conn.data_to_send())
        self.authority = f"127.0.0.1:{port}"

    def post(self, path: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        body = b'{"amount": 3}'
        self.conn.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":authority", self.authority), (":path", path),
                                     ("content-type", "application/json"), ("content-length", str(len(body)))])
        self.conn.send_data(sid, body, end_stream=True)
        self.tls.sendall(self.conn.data_to_send())
        return sid

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid, 8)  # CANCEL
        self.tls.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.tls.close()


def test_an_http2_client_that_resets_a_held_stream_withdraws_its_hold(proxy, upstream):  # noqa: F811
    c = H2Client(proxy)
    try:
        marker = uuid.uuid4().hex
        sid = c.post(f"/v1/refunds/{marker}")
        held = wait_pending(proxy, marker)
        c.reset(sid)
        try:  # long before the hold's own timeout (300 s)
            eventually(lambda: all(p["request_id"] != held["request_id"] for p in pending(proxy)), what="the hold withdrawn after the client reset its stream (the connection is open)")
        except TimeoutError:
            cli(proxy, "deny", held["request_id"])
            raise
    finally:
        c.close()
    assert forwarded(upstream, marker) == []


def test_reset_streams_do_not_fill_the_cap_of_held_requests(proxy, upstream):  # noqa: F811
    c = H2Client(proxy)
    ids = []
    try:
        for _ in range(CAP):
            marker = uuid.uuid4().hex
            sid = c.post(f"/v1/refunds/{marker}")
            ids.append(wait_pending(proxy, marker)["request_id"])
            c.reset(sid)
        # nobody waits for those CAP requests any more; an honest caller of the proxy comes
        honest = uuid.uuid4().hex
        call = Call(proxy, "POST", f"/v1/refunds/{honest}", {"amount": 1})
        call.thread.join(10)
        refused = not call.thread.is_alive() and call.result is not None and call.result.status_code == 429
        if not refused:
            cli(proxy, "deny", wait_pending(proxy, honest)["request_id"])
        assert not refused, call.result.text if call.result is not None else ""
    finally:
        for i in ids:
            cli(proxy, "deny", i)
        c.close()


def test_approving_a_hold_whose_http2_stream_was_reset_sends_nothing_upstream(proxy, upstream):  # noqa: F811
    # The caller cancelled (RST_STREAM); an approver then approves what is still listed as pending:
    # rr injects the secret and performs the refund for nobody.
    c = H2Client(proxy)
    try:
        marker = uuid.uuid4().hex
        sid = c.post(f"/v1/refunds/{marker}")
        held = wait_pending(proxy, marker)
        c.reset(sid)
        c.conn.ping(b"12345678")  # a round trip on the connection: rr has read the reset
        c.tls.sendall(c.conn.data_to_send())
        while not any(isinstance(e, h2.events.PingAckReceived) for e in c.conn.receive_data(c.tls.recv(65536))):
            pass
        cli(proxy, "approve", held["request_id"])
        audit_record(proxy.home, held["request_id"], limit=200)  # the flow is over
    finally:
        c.close()
    assert forwarded(upstream, marker) == []
