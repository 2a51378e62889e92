"""The CA mitmproxy signs its certificates with (created by `rr init`, or at the first `rr run`)."""

from __future__ import annotations

from pathlib import Path


def ensure_ca(confdir: Path) -> Path:
    from mitmproxy.certs import CertStore  # loads cryptography's x509 machinery: only when a CA is made

    confdir.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(confdir, "mitmproxy", 2048)
    return confdir / "mitmproxy-ca-cert.pem"
