"""The control plane's own CA (not mitmproxy's): it signs the control plane's
server certificate and one client certificate per data plane. Data planes
trust only this CA for the control plane; the control plane accepts a client
certificate only if its fingerprint is the one registered for a data plane
that is not revoked (rr_addon.hybrid.registry), so revocation is immediate and
needs no CRL."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825  # re-issue a data plane (`rr control-plane issue-dataplane NAME --force`) before then


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(pem: bytes) -> str:
    return fingerprint(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER))


@dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "rr control plane CA") -> CA:
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert: bytes, key: bytes) -> CA:
        return cls(x509.load_pem_x509_certificate(cert), serialization.load_pem_private_key(key, None))  # type: ignore[arg-type]

    def _leaf(self, key, common_name: str, usage, sans: list[x509.GeneralName]) -> x509.Certificate:
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def server(self, names: list[str]) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for the control plane's HTTPS listener, valid for `names`."""
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        key = new_key()
        return cert_pem(self._leaf(key, names[0], ExtendedKeyUsageOID.SERVER_AUTH, sans)), key_pem(key)

    def client(self, name: str) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for data plane `name`."""
        key = new_key()
        return cert_pem(self._leaf(key, f"rr data plane {name}", ExtendedKeyUsageOID.CLIENT_AUTH, [])), key_pem(key)


def load_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`ctx.load_cert_chain` from memory: the key goes through an anonymous memory
    file (memfd), never a file on disk. (A private temporary file elsewhere.)"""
    data = cert + b"\n" + key
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("rr-tls", 0)
        try:
            os.write(fd, data)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(prefix="rr-tls-") as f:  # pragma: no cover - not Linux
        os.chmod(f.name, 0o600)
        f.write(data)
        f.flush()
        ctx.load_cert_chain(f.name)
