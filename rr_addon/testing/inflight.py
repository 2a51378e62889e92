"""A request through rr in a thread of its own, for what rr may hold (approvals,
mitmweb's intercepts) while the test acts."""

from __future__ import annotations

import ssl
import threading

import httpx

from rr_addon.testing.proxy import ProxyProcess


class InFlight:
    """`InFlight(proxy, user, key, "POST", url, json=...)` sends at once; `.response()` waits for the answer."""

    def __init__(self, proxy: ProxyProcess, user: str, key: str, method: str, url: str, **kwargs):
        self.result: httpx.Response | None = None
        self.error: Exception | None = None

        def run() -> None:
            verify = ssl.create_default_context(cafile=str(proxy.ca))
            try:
                with httpx.Client(proxy=proxy.url(user, key), verify=verify, timeout=90) as c:
                    self.result = c.request(method, url, **kwargs)
            except Exception as e:  # noqa: BLE001 -- reported by response()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def response(self, timeout: float = 60) -> httpx.Response:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the request is still held"
        assert self.error is None, self.error
        assert self.result is not None
        return self.result
