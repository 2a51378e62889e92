"""Test-only mitmproxy script for the custody tests, loaded after rr (`-s`).

- DNS: names in $RR_TEST_DNS (JSON: name -> list of addresses, or
  {"fail_first": address}) are answered from that table inside the proxy, so
  rr's address checks see private or failing answers without any real lookup.
- Safety net: a connection to anything but a loopback literal or `localhost`
  is redirected to the local sink at 127.0.0.1:$RR_TEST_SINK (which counts
  attempts), so a faulty rr never reaches a non-loopback address.
- Another addon changing a decided request: `x-test-edit: path|host|body|header`
  makes this script change the request in its `request` hook, after rr's.
"""

import asyncio
import ipaddress
import json
import os
import socket

TABLE = json.loads(os.environ.get("RR_TEST_DNS", "{}"))
SINK = int(os.environ.get("RR_TEST_SINK", "0"))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class Custody:
    def __init__(self):
        self.asked: dict[str, int] = {}

    def running(self):
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def getaddrinfo(host, port, *args, **kwargs):
            name = host.decode() if isinstance(host, bytes) else host
            if name in TABLE:
                self.asked[name] = self.asked.get(name, 0) + 1
                answer = TABLE[name]
                if isinstance(answer, dict):  # fails the first time, then answers (DNS rebinding)
                    if self.asked[name] == 1:
                        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
                    answer = [answer["fail_first"]]
                return [
                    (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port, 0, 0) if ":" in a else (a, port))
                    for a in answer
                ]
            if not _loopback(name):
                raise socket.gaierror(socket.EAI_NONAME, f"test: no lookups of {name}")
            return await real(host, port, *args, **kwargs)

        loop.getaddrinfo = getaddrinfo

    def server_connect(self, data):
        host = data.server.address[0] if data.server.address else ""
        if data.server.error is None and not _loopback(host):
            data.server.address = ("127.0.0.1", SINK)

    def request(self, flow):
        edit = flow.request.headers.get("x-test-edit")
        if edit == "path":
            flow.request.path = "/anything/edited-by-addon"
        elif edit == "host":
            flow.request.headers["host"] = "evil.example"
        elif edit == "body":
            flow.request.content = b'{"model": "forbidden"}'
        elif edit == "header":
            flow.request.headers["x-added"] = "1"


addons = [Custody()]
