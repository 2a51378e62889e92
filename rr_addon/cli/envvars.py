"""What `rr env` prints: the variables each common client needs to go through rr
(docs/clients.md explains them per client), and where the proxy listens."""

from __future__ import annotations

import ssl
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_NO_PROXY = "localhost,127.0.0.1,::1"
BUNDLE_NAME = "rr-ca-bundle.pem"
WGETRC_NAME = "rr-wgetrc"
# Where Debian/Ubuntu, Fedora/RHEL, Alpine and openSUSE keep the system bundle.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
)


def listen_from_planes(listens: list[str]) -> tuple[str, str | None]:
    """The address clients should use, from the running data planes' listen
    addresses ('127.0.0.1:8081', comma-separated when several), and a note."""
    addresses = [a for listen in listens for a in listen.split(",") if a]
    if not addresses:
        return DEFAULT_LISTEN, f"no running rr data plane found: assuming {DEFAULT_LISTEN} (pass --listen HOST:PORT)"
    chosen = addresses[0]
    note = None
    host, _, port = chosen.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        chosen = f"127.0.0.1:{port}"
        note = f"rr listens on every address ({addresses[0]}): from another machine use this host's name instead of 127.0.0.1"
    elif len(set(addresses)) > 1:
        note = f"rr data planes listen on {', '.join(sorted(set(addresses)))}: using {chosen} (pass --listen to choose)"
    return chosen, note


def system_bundle() -> Path | None:
    candidates = [ssl.get_default_verify_paths().cafile, *SYSTEM_BUNDLES]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def write_bundle(ca: Path, directory: Path) -> Path | None:
    """The system CAs plus rr's CA in one file, for the variables that replace a
    client's whole trust store; None when no system bundle is found."""
    system = system_bundle()
    if system is None or not ca.is_file():
        return None
    bundle = directory / BUNDLE_NAME
    text = system.read_text(errors="replace").rstrip("\n") + "\n" + ca.read_text()
    if not bundle.exists() or bundle.read_text(errors="replace") != text:
        tmp = bundle.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(bundle)
    return bundle


def write_wgetrc(trust: Path, directory: Path) -> Path:
    """wget has no CA variable (GnuTLS builds ignore SSL_CERT_FILE): a wgetrc naming the bundle."""
    wgetrc = directory / WGETRC_NAME
    text = f"# written by rr env: wget trusts rr's CA through this file (WGETRC)\nca_certificate = {trust}\n"
    if not wgetrc.exists() or wgetrc.read_text() != text:
        wgetrc.write_text(text)
    return wgetrc


def client_environment(
    proxy_url: str, ca: Path, bundle: Path | None, no_proxy: str, wgetrc: Path | None = None
) -> tuple[dict[str, str], list[str]]:
    """(variables, notes) for git, curl, wget, pip/requests/httpx, npm/Node, Go; Java gets a note."""
    trust = bundle or ca
    notes = [
        "wget reads only the lower-case proxy variables; Node's built-in fetch reads none before Node 22 (see docs/clients.md)",
        f"the *_CA_* / *CAINFO / *CERT* files below replace a client's whole trust store: {trust}"
        + (" holds the system CAs plus rr's" if bundle else " holds only rr's CA (no system bundle found)"),
        "Java ignores these variables: see docs/clients.md (proxy properties, a trust store, and Basic for tunnels)",
    ]
    variables = {
        "HTTPS_PROXY": proxy_url,
        "https_proxy": proxy_url,
        "HTTP_PROXY": proxy_url,
        "http_proxy": proxy_url,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
        "SSL_CERT_FILE": str(trust),  # OpenSSL-based clients, Python's ssl, Go
        "CURL_CA_BUNDLE": str(trust),  # curl ignores SSL_CERT_FILE
        "GIT_SSL_CAINFO": str(trust),  # Debian's git (GnuTLS libcurl) ignores SSL_CERT_FILE
        "GIT_HTTP_PROXY_AUTHMETHOD": "basic",  # git sends the proxy credential up front instead of waiting for a 407
        "REQUESTS_CA_BUNDLE": str(trust),  # requests (and pip) ignore SSL_CERT_FILE
        "PIP_CERT": str(trust),
        "NPM_CONFIG_CAFILE": str(trust),  # npm's cafile wins over NODE_EXTRA_CA_CERTS
        "NODE_EXTRA_CA_CERTS": str(ca),  # added to Node's built-in CAs
        "NODE_USE_ENV_PROXY": "1",  # Node 22.21+/24+: fetch (and http/https from 24.5) honour HTTPS_PROXY; older Node ignores it
    }
    if wgetrc is not None:
        variables["WGETRC"] = str(wgetrc)  # instead of ~/.wgetrc
    return variables, notes
