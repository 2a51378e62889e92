"""Operator commands against a control plane (`--server URL --admin FILE`):
the admin credential file and a small HTTPS client for `/v1/admin/…`."""

from __future__ import annotations

import json
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

KIND = "rr-admin-credential"


class RemoteError(Exception):
    pass


def credential_json(name: str, url: str, ca_pem: bytes, token: str) -> str:
    return json.dumps({"kind": KIND, "name": name, "server": url, "ca": ca_pem.decode(), "token": token}, indent=2)


@dataclass(frozen=True)
class Credential:
    name: str
    server: str
    ca: str
    token: str


def read_credential(path: Path) -> Credential:
    try:
        st = path.stat()
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RemoteError(f"cannot read the admin credential {path}: {e.strerror or e}") from None
    except ValueError:
        raise RemoteError(f"{path} is not an rr admin credential (JSON from `rr control-plane issue-admin NAME`)") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RemoteError(f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):o}): it holds an admin token; run: chmod 600 {path}")
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise RemoteError(f"{path} is not an rr admin credential (JSON from `rr control-plane issue-admin NAME`)")
    try:
        return Credential(doc["name"], doc["server"], doc["ca"], doc["token"])
    except KeyError as e:
        raise RemoteError(f"{path}: the admin credential lacks {e}") from None


class Client:
    def __init__(self, server: str, credential_path: str | None):
        path = credential_path or os.environ.get("RR_ADMIN")
        if not path:
            raise RemoteError("--server needs an admin credential: --admin FILE or RR_ADMIN=FILE (`rr control-plane issue-admin NAME` writes one)")
        cred = read_credential(Path(path).expanduser())
        from rr_addon.hybrid.bundle import BundleError, check_url

        try:
            self.server = check_url(server)
        except BundleError as e:
            raise RemoteError(str(e)) from None
        ctx = ssl.create_default_context(cadata=cred.ca)
        self._client = httpx.Client(base_url=self.server, verify=ctx, timeout=60, trust_env=False, headers={"Authorization": f"Bearer {cred.token}"})

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._client.request(method, f"/v1/admin/{path}", **kw)
        except httpx.HTTPError as e:
            raise RemoteError(f"cannot reach the control plane {self.server}: {e}") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200:
            message = body.get("error") if isinstance(body, dict) else r.text[:300]
            raise RemoteError(f"the control plane {self.server} answered {r.status_code}: {message}")
        return body

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
