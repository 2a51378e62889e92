"""Requests rr may hold for approval (tests of `effect: approve`): one sent in a
thread of its own, since it blocks until a person decides, and one sent on a raw
connection, so a test can hang up while it is held."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from typing import Any

import httpx


class Call:
    """One request through an rr proxy (a ProxyProcess with `upstream_port` set) to the
    local upstream, in a thread of its own."""

    def __init__(self, proxy: Any, user: str, key: str, method: str, path: str, *, json: Any = None, content: bytes | None = None):
        self.result: httpx.Response | None = None
        self.error: Exception | None = None

        def run() -> None:
            verify = ssl.create_default_context(cafile=str(proxy.ca))
            try:
                with httpx.Client(proxy=proxy.url(user, key), verify=verify, timeout=90) as c:
                    self.result = c.request(method, f"https://127.0.0.1:{proxy.upstream_port}{path}", json=json, content=content)
            except Exception as e:  # noqa: BLE001 -- reported by the test
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def response(self, timeout: float = 60) -> httpx.Response:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the request is still held"
        assert self.error is None, self.error
        assert self.result is not None
        return self.result


def raw_request(proxy: Any, user: str, key: str, path: str, body: bytes = b'{"amount": 3}') -> ssl.SSLSocket:
    """A JSON POST on a CONNECT tunnel of its own; closing the socket is the client leaving."""
    port = proxy.upstream_port
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    auth = base64.b64encode(f"{user}:{key}".encode()).decode()
    s.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    tls = ssl.create_default_context(cafile=str(proxy.ca)).wrap_socket(s, server_hostname="127.0.0.1")
    tls.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return tls
