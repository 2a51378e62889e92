"""A throwaway CA and server certificate for local TLS upstreams (tests, demo, benchmarks).

Built by the control plane's own CA code (rr_addon.hybrid.pki), so tests and
the product issue certificates one way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rr_addon.hybrid.pki import CA, cert_pem


@dataclass(frozen=True)
class TestPKI:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_pki(directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")) -> TestPKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca = CA.create("rr test upstream CA")
    cert, key = ca.server(list(names))
    pki = TestPKI(directory / "upstream-ca.pem", directory / "upstream.pem", directory / "upstream-key.pem")
    pki.ca_cert.write_bytes(cert_pem(ca.cert))
    pki.server_cert.write_bytes(cert)
    pki.server_key.write_bytes(key)
    return pki
