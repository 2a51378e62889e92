"""What a viewer of a `ProxyProcess(web=True)` sees: mitmweb's REST API and its live
/updates stream, as the end-to-end tests read them."""

from __future__ import annotations

import threading
import uuid

import httpx
from websockets.sync.client import connect as ws_connect

from rr_addon.testing.proxy import WEB_PASSWORD, ProxyProcess


def web_api(web: ProxyProcess) -> httpx.Client:
    """A client of mitmweb's REST API, logged in, that passes tornado's double-submit XSRF
    check (the same token in a cookie and a header) on every request."""
    token = uuid.uuid4().hex
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{web.web_port}",
        headers={"authorization": f"Bearer {WEB_PASSWORD}", "x-xsrftoken": token},
        timeout=10,
    )
    client.cookies.set("_mitmproxy_xsrf", token)
    return client


class Updates:
    """`with Updates(web) as messages:` collects what mitmweb's /updates websocket sends
    while the block runs (connected before the block starts)."""

    def __init__(self, web: ProxyProcess):
        self.web = web
        self.messages: list[str] = []
        self._ready, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with ws_connect(f"ws://127.0.0.1:{self.web.web_port}/updates?token={WEB_PASSWORD}") as ws:
            self._ready.set()
            while not self._stop.is_set():
                try:
                    self.messages.append(ws.recv(timeout=0.2))
                except TimeoutError:
                    continue

    def __enter__(self) -> list[str]:
        self._thread.start()
        assert self._ready.wait(10), "mitmweb's /updates stream did not connect"
        return self.messages

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
