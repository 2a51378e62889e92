"""A real MCP server (the `mcp` SDK's MCPServer, streamable HTTP at /mcp) on a local
TLS port, for the recipes' tests (docs/ai.md). Every request body it receives is
recorded, so a test can show that a refused call never reached it.

Tools: `read_file(path)` answers with a line naming the file's owner (an email
address, for redaction), `delete_file(path)` records the deletion in `deleted`.
"""

from __future__ import annotations

import socket
import threading
import time

from rr_addon.testing.certs import TestPKI


class McpUpstream:
    def __init__(self, pki: TestPKI) -> None:
        import uvicorn
        from mcp.server.mcpserver import MCPServer
        from mcp.server.transport_security import TransportSecuritySettings

        self.bodies: list[bytes] = []  # every request body, as received
        self.deleted: list[str] = []
        server = MCPServer("rr-test")

        @server.tool()
        def read_file(path: str) -> str:
            """Read a file."""
            return f"{path}: owned by alice@example.com"

        @server.tool()
        def delete_file(path: str) -> str:
            """Delete a file."""
            self.deleted.append(path)
            return f"deleted {path}"

        # rr forwards the caller's Host (127.0.0.1:<port>); the SDK's DNS-rebinding guard would
        # want it listed, and it guards a browser-facing server, which this is not
        app = server.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        bodies = self.bodies

        async def recording(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            chunks: list[bytes] = []

            async def tapped():
                message = await receive()
                if message["type"] == "http.request":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body"):
                        bodies.append(b"".join(chunks))
                return message

            return await app(scope, tapped, send)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            recording, host="127.0.0.1", port=self.port, log_level="warning", ssl_certfile=str(pki.server_cert), ssl_keyfile=str(pki.server_key), lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="mcp-upstream", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mcp"

    def __enter__(self) -> McpUpstream:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(10)
