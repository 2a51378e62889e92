"""Local TLS servers that real tools talk to in the client tests: git smart HTTP
(Debian's `git http-backend` run as CGI), a PEP 503 simple index with a wheel,
an npm registry (packuments and tarballs, scoped names included) and plain
files. Every request must carry `Authorization: Basic <user:token>` — the
secret rr injects — and the server records what it received and sent.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import ssl
import subprocess
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from rr_addon.testing.certs import TestPKI

GIT_BACKEND = "/usr/lib/git-core/git-http-backend"


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    received: int  # request body bytes (after de-chunking)
    sent: int  # response body bytes
    status: int


@dataclass
class Site:
    """What the server serves: files by path, npm packuments by package name, git repositories under `git_root`."""

    files: dict[str, bytes] = field(default_factory=dict)
    packuments: dict[str, dict] = field(default_factory=dict)
    git_root: Path | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    site: Site
    expected: str
    seen: list[Seen]

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = self.headers.get("content-length")
        if length is None and self.command == "POST":
            self._send(411, b"length required", "text/plain", 0)
            raise _Done
        return self.rfile.read(int(length or 0))

    def _handle(self) -> None:
        try:
            body = self._body()
        except _Done:
            return
        auth = self.headers.get("authorization")
        if auth != self.expected:
            self._send(401, b"bad credentials", "text/plain", len(body), extra=[("WWW-Authenticate", 'Basic realm="tools"')])
            return
        path = self.path.split("?", 1)[0]
        if self.site.git_root is not None and path.startswith("/git/"):
            self._git(body)
        elif path in self.site.files:
            data = self.site.files[path]
            self._send(200, data, "text/html" if path.endswith("/") else "application/octet-stream", len(body))
        elif (name := unquote(path[1:])) in self.site.packuments:
            self._send(200, json.dumps(self.site.packuments[name]).encode(), "application/json", len(body))
        else:
            self._send(404, b'{"error": "not found"}', "application/json", len(body))

    def _send(self, status: int, data: bytes, ctype: str, received: int, extra=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.seen.append(Seen(self.command, self.path, self.headers.get("authorization"), received, len(data), status))

    def _git(self, body: bytes) -> None:
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.site.git_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": "rr",  # receive-pack (push) is only enabled for an authenticated user
            "REQUEST_METHOD": self.command,
            "PATH_INFO": unquote(path[len("/git") :]),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GATEWAY_INTERFACE": "CGI/1.1",
        }
        if self.headers.get("content-encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["content-encoding"]
        if self.headers.get("git-protocol"):
            env["GIT_PROTOCOL"] = self.headers["git-protocol"]
        out = subprocess.run([GIT_BACKEND], input=body, env=env, capture_output=True, check=False).stdout
        head, _, data = out.partition(b"\r\n\r\n")
        status, extra, ctype = 200, [], "application/octet-stream"
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "status":
                status = int(value.split()[0])
            elif name == "content-type":
                ctype = value
            elif name and name != "content-length":
                extra.append((name, value))
        self._send(status, data, ctype, len(body), extra)


class _Done(Exception):
    pass


class ToolServer:
    """`with ToolServer(pki, site, user, token) as s:` serves `site` over TLS on 127.0.0.1:<s.port>."""

    def __init__(self, pki: TestPKI, site: Site, user: str, token: str):
        self.seen: list[Seen] = []
        expected = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
        handler = type("Handler", (_Handler,), {"site": site, "expected": expected, "seen": self.seen})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="tools", daemon=True)

    def __enter__(self) -> ToolServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------- artefacts


def wheel(name: str, version: str, module_text: str) -> tuple[str, bytes]:
    """A minimal pure-Python wheel: (file name, bytes)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": module_text.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: rr-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n" for p, d in files.items()
    ) + f"{dist}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(f"{dist}/RECORD", record)
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()


def simple_index(site: Site, project: str, filename: str, data: bytes) -> None:
    """PEP 503: /simple/<project>/ links the file with its sha256."""
    digest = hashlib.sha256(data).hexdigest()
    site.files[f"/files/{filename}"] = data
    site.files["/simple/"] = f'<html><body><a href="/simple/{project}/">{project}</a></body></html>'.encode()
    site.files[f"/simple/{project}/"] = f'<html><body><a href="/files/{filename}#sha256={digest}">{filename}</a></body></html>'.encode()


def npm_package(site: Site, base_url: str, name: str, version: str, extra_bytes: int = 0) -> bytes:
    """Publish `name@version` (scoped names too) with an index.js and `extra_bytes` of data; returns the tarball."""
    package_json = json.dumps({"name": name, "version": version, "main": "index.js"}).encode()
    members = {
        "package/package.json": package_json,
        "package/index.js": f"module.exports = {json.dumps(name + '@' + version)};\n".encode(),
        "package/data.bin": os.urandom(extra_bytes),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tgz = gzip.compress(raw.getvalue(), mtime=0)
    tar_path = f"/tarballs/{name.replace('/', '-')}-{version}.tgz"
    site.files[tar_path] = tgz
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    site.packuments[name] = {
        "name": name,
        "dist-tags": {"latest": version},
        "versions": {
            version: {
                "name": name,
                "version": version,
                "main": "index.js",
                "dist": {"tarball": base_url + tar_path, "shasum": hashlib.sha1(tgz).hexdigest(), "integrity": integrity},
            }
        },
    }
    return tgz
