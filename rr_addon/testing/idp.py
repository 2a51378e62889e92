"""A local identity provider for tests: HTTP or HTTPS on 127.0.0.1.

Endpoints:
  GET  /jwks        the published keys (Cache-Control: max-age=<jwks_max_age>)
  POST /introspect  RFC 7662, client authentication (Basic or form), answers for
                    tokens registered with `opaque()` or signed with `sign()`
  POST /token       RFC 6749 §4.4 client_credentials, tokens "at-<n>-<random>";
                    §6 refresh_token (rotating: each refresh answers a new refresh
                    token and retires the old one, whose reuse is refused and
                    counted in `reuses`); RFC 7523 jwt-bearer assertions from
                    issuers registered with `trust_issuer`. Clients authenticate
                    with a secret (Basic or form), a private_key_jwt assertion
                    (`register_client_key`: signature, aud, exp, iss = sub, jti
                    replay), or none (`public_clients`). Every refusal is kept in
                    `refusals`, every token issued in `issued`.

It counts requests per endpoint (`count("jwks")`) and can be told to fail
(`fail("token", 503)`), to answer something odd (`override(...)`), to be
slow (`slow("jwks", 0.2)`), to hold requests until released (`hold` /
`release`), to drip its answer one byte at a time (`drip("jwks", 0.25)`;
`hangups("jwks")` then counts answers the client abandoned), or to go down
altogether (`down()` / `up()`: the port refuses connections). Every answer
closes its connection, so "down" really means unreachable for clients that
pool connections.

    with IdP() as idp:
        kid = idp.add_key("RSA")
        token = idp.token(sub="alice", aud="api")
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import ssl
import threading
import time
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from rr_addon.testing.certs import TestPKI

ENDPOINTS = ("jwks", "introspect", "token")
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_ALG = {"RSA": "RS256", "EC": "ES256", "Ed25519": "EdDSA"}


@lru_cache(maxsize=None)
def pooled_key(kind: str, n: int = 0) -> Any:
    """Private keys are slow to make (RSA ~50-100 ms): tests share a small pool."""
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "EC":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind!r}")


def public_jwk(private_key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    pub = private_key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(pub, as_dict=True)
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(pub, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(pub, as_dict=True)
    jwk.update(kid=kid, use="sig")
    if alg:
        jwk["alg"] = alg
    return jwk


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes] = lambda _: b"") -> str:
    """A JWS built by hand, for tokens no library would make (alg none, key confusion)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing_input + "." + b64url(sign(signing_input.encode()))


def hs256(key: bytes) -> Callable[[bytes], bytes]:
    return lambda msg: hmac.new(key, msg, hashlib.sha256).digest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    idp: IdP

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        endpoint = self.path.split("?")[0].strip("/")
        if endpoint not in ENDPOINTS:
            return self._send(404, {"error": "not_found"})
        try:
            status, payload, headers = self.idp._answer(endpoint, self.command, self.headers.get("authorization"), body)
        except Exception as e:  # a bug in the IdP: answer 500 and keep it for the test to see
            self.idp.errors.append(e)
            status, payload, headers = 500, {"error": "server_error"}, {}
        self._send(status, payload, headers, endpoint)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, endpoint: str | None = None) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        drip = self.idp._drip_interval(endpoint)
        if drip:
            raw += b" " * 4096  # JSON allows trailing whitespace: enough bytes to drip for minutes
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.send_header("connection", "close")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not drip:
                self.wfile.write(raw)
            for i in range(len(raw) if drip else 0):
                self.wfile.write(raw[i : i + 1])
                self.wfile.flush()
                time.sleep(drip)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.idp._hung_up(endpoint)  # the client gave up (a timeout test)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and vanish are part of the tests


class IdP:
    def __init__(self, *, pki: TestPKI | None = None, jwks_max_age: int | None = 300, token_ttl: int = 3600) -> None:
        self.pki = pki
        self.jwks_max_age = jwks_max_age
        self.token_ttl = token_ttl
        self.clients: dict[str, str] = {"rr": "rr-client-secret"}
        self.public_clients: set[str] = set()
        self.rotate_refresh_tokens = True
        self.issued: list[dict[str, Any]] = []  # {"grant", "access_token", "client", "sub", "scope"} per token issued
        self.refusals: list[str] = []  # why the token endpoint refused, in order
        self.assertions: list[dict[str, Any]] = []  # claims of accepted jwt-bearer assertions
        self.reuses = 0  # rotated-out refresh tokens presented again
        self._refresh: dict[str, dict[str, Any]] = {}  # refresh token -> {"client", "sub", "active"}
        self._client_keys: dict[str, Any] = {}  # client id -> public key (private_key_jwt)
        self._issuers: dict[str, Any] = {}  # assertion issuer -> public key (jwt-bearer)
        self._jtis: set[str] = set()
        self.received: list[tuple[str, dict[str, str]]] = []  # (endpoint, form) of POSTs
        self.errors: list[Exception] = []  # exceptions inside the IdP itself
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(ENDPOINTS, 0)
        self._failures: dict[str, tuple[int, Any, dict[str, str]]] = {}
        self._delays: dict[str, float] = {}
        self._drips: dict[str, float] = {}
        self._holds: dict[str, threading.Event] = {}
        self._hangups = dict.fromkeys(ENDPOINTS, 0)
        self._waiting = dict.fromkeys(ENDPOINTS, 0)
        self._keys: dict[str, tuple[Any, str]] = {}  # kid -> (private key, alg)
        self._published: list[str] = []  # kids in the JWKS, in order
        self._signer: str | None = None
        self._opaque: dict[str, dict[str, Any]] = {}
        self._serial = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._bind()

    # ------------------------------------------------------------ lifecycle
    def _bind(self) -> None:
        handler = type("Handler", (_Handler,), {"idp": self})
        server = _Server(("127.0.0.1", self.port), handler)
        if self.pki is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]

    def _serve(self) -> None:
        assert self._server is not None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def __enter__(self) -> IdP:
        self._serve()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.heal()  # held requests end, so their threads do
        self.down()

    def down(self) -> None:
        """Stop listening: connections to the port are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def up(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            self._bind()
            self._serve()

    # ------------------------------------------------------------ addresses
    @property
    def base_url(self) -> str:
        return f"{'https' if self.pki else 'http'}://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base_url + "/"

    jwks_url = property(lambda self: self.base_url + "/jwks")
    introspection_url = property(lambda self: self.base_url + "/introspect")
    token_url = property(lambda self: self.base_url + "/token")

    # ------------------------------------------------------------ behaviour
    def count(self, endpoint: str) -> int:
        with self._lock:
            return self._counts[endpoint]

    def fail(self, endpoint: str, status: int = 503) -> None:
        self.override(endpoint, status, {"error": "temporarily_unavailable"})

    def override(self, endpoint: str, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """Answer every request to `endpoint` with this (bytes are sent as they are)."""
        with self._lock:
            self._failures[endpoint] = (status, body, headers or {})

    def slow(self, endpoint: str, seconds: float) -> None:
        with self._lock:
            self._delays[endpoint] = seconds

    def drip(self, endpoint: str, interval: float) -> None:
        """Answer `endpoint` one byte every `interval` seconds (a body of several KB)."""
        with self._lock:
            self._drips[endpoint] = interval

    def hold(self, endpoint: str) -> None:
        """Requests to `endpoint` wait (connection open, nothing answered) until `release`."""
        with self._lock:
            self._holds.setdefault(endpoint, threading.Event())

    def release(self, endpoint: str) -> None:
        with self._lock:
            event = self._holds.pop(endpoint, None)
        if event is not None:
            event.set()

    def waiting(self, endpoint: str) -> int:
        """Requests to `endpoint` held right now."""
        with self._lock:
            return self._waiting[endpoint]

    def hangups(self, endpoint: str) -> int:
        """Answers to `endpoint` the client closed the connection on before the end."""
        with self._lock:
            return self._hangups[endpoint]

    def _hung_up(self, endpoint: str | None) -> None:
        if endpoint in self._hangups:
            with self._lock:
                self._hangups[endpoint] += 1

    def _drip_interval(self, endpoint: str | None) -> float:
        with self._lock:
            return self._drips.get(endpoint, 0.0) if endpoint else 0.0

    def heal(self) -> None:
        with self._lock:
            self._failures.clear()
            self._delays.clear()
            self._drips.clear()
            holds, self._holds = list(self._holds.values()), {}
        for event in holds:
            event.set()

    # ------------------------------------------------------------ keys and tokens
    def add_key(self, kind: str = "RSA", *, kid: str | None = None, publish: bool = True, sign_with: bool = True, pool: int = 0) -> str:
        kid = kid or f"{kind.lower()}-{next(self._serial)}"
        with self._lock:
            self._keys[kid] = (pooled_key(kind, pool), DEFAULT_ALG[kind])
            if publish:
                self._published.append(kid)
            if sign_with:
                self._signer = kid
        return kid

    def retire(self, kid: str) -> None:
        """Remove a key from the JWKS (it can still sign, to test refusal)."""
        with self._lock:
            self._published.remove(kid)

    def private_key(self, kid: str) -> Any:
        return self._keys[kid][0]

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [public_jwk(self._keys[k][0], k, self._keys[k][1]) for k in self._published]}

    def sign(self, claims: dict[str, Any], *, kid: str | None = None, alg: str | None = None, headers: dict[str, Any] | None = None) -> str:
        kid = kid or self._signer
        assert kid is not None, "add_key() first"
        key, default_alg = self._keys[kid]
        token = jwt.encode(claims, key, algorithm=alg or default_alg, headers={"kid": kid, **(headers or {})})
        with self._lock:
            self._opaque[token] = {"active": True, **claims}  # the introspection endpoint vouches for what it signed
        return token

    def claims(self, *, sub: str = "alice", aud: Any = "api", exp_in: float | None = 300, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        out: dict[str, Any] = {"iss": self.issuer, "sub": sub, "aud": aud, "iat": now}
        if exp_in is not None:
            out["exp"] = now + int(exp_in)
        out.update(extra)
        return {k: v for k, v in out.items() if v is not None}

    def token(self, *, kid: str | None = None, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        return self.sign(self.claims(**claims), kid=kid, headers=headers)

    def opaque(self, *, active: bool = True, **claims: Any) -> str:
        """Register an opaque access token the introspection endpoint knows."""
        token = "op-" + secrets.token_urlsafe(24)
        with self._lock:
            self._opaque[token] = {"active": active, **claims}
        return token

    def revoke(self, token: str) -> None:
        """From now on introspection says the token is inactive."""
        with self._lock:
            self._opaque[token] = {**self._opaque[token], "active": False}

    # ------------------------------------------------------------ the server side
    def _answer(self, endpoint: str, method: str, authorization: str | None, body: bytes) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self._counts[endpoint] += 1
            failure = self._failures.get(endpoint)
            delay = self._delays.get(endpoint, 0.0)
            held = self._holds.get(endpoint)
            if held is not None:
                self._waiting[endpoint] += 1
        if held is not None:
            held.wait(60)
            with self._lock:
                self._waiting[endpoint] -= 1
        if delay:
            time.sleep(delay)
        if failure is not None:
            return failure
        if endpoint == "jwks":
            if method != "GET":
                return 405, {"error": "method_not_allowed"}, {}
            headers = {"cache-control": f"max-age={self.jwks_max_age}"} if self.jwks_max_age is not None else {}
            return 200, self.jwks(), headers
        if method != "POST":
            return 405, {"error": "method_not_allowed"}, {}
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        with self._lock:
            self.received.append((endpoint, dict(form)))
        grant = form.get("grant_type")
        anonymous = endpoint == "token" and grant == JWT_BEARER and self._no_client(authorization, form)  # the assertion authenticates
        client = None if anonymous else self._client(authorization, form)
        if client is None and not anonymous:
            return 401, {"error": "invalid_client"}, {"www-authenticate": 'Basic realm="idp"'}
        if endpoint == "introspect":
            return 200, self._introspect(form.get("token", "")), {}
        if grant == "client_credentials":
            if client in self.public_clients:
                return self._refuse(400, "unauthorized_client", "public client asked for client_credentials")
            return self._issue("client_credentials", client, client, form.get("scope"))
        if grant == "refresh_token":
            return self._refresh_grant(client, form)
        if grant == JWT_BEARER:
            return self._jwt_bearer_grant(client, form)
        return self._refuse(400, "unsupported_grant_type", f"grant {grant!r}")

    def _client(self, authorization: str | None, form: dict[str, str]) -> str | None:
        """The authenticated client id, or None (the reason is in `refusals`)."""
        if authorization and authorization.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            except ValueError:
                return self._refused("malformed Basic credentials")
            client_id, secret = unquote_plus(user), unquote_plus(password)  # RFC 6749 §2.3.1
        elif "client_assertion" in form:
            return self._client_assertion(form)
        elif "client_secret" not in form and form.get("client_id") in self.public_clients:
            return form["client_id"]
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        expected = self.clients.get(client_id)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            return self._refused("client secret wrong")
        return client_id

    @staticmethod
    def _no_client(authorization: str | None, form: dict[str, str]) -> bool:
        return not authorization and not ({"client_id", "client_secret", "client_assertion"} & set(form))

    def _refused(self, why: str) -> None:
        with self._lock:
            self.refusals.append(why)
        return None

    def _refuse(self, status: int, error: str, why: str) -> tuple[int, Any, dict[str, str]]:
        self._refused(why)
        return status, {"error": error}, {}

    def _verify_jwt(self, token: str, key: Any, *, what: str) -> dict[str, Any] | None:
        """Signature, aud (this token endpoint), exp, and a jti never seen before."""
        try:
            claims = jwt.decode(
                token, key, algorithms=["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "ES512", "EdDSA"],
                audience=[self.token_url], options={"require": ["exp", "iat", "jti", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            return self._refused(f"{what} expired")
        except jwt.InvalidAudienceError:
            return self._refused(f"{what} audience wrong")
        except jwt.InvalidSignatureError:
            return self._refused(f"{what} signature invalid")
        except jwt.PyJWTError as e:
            return self._refused(f"{what} invalid: {type(e).__name__}")
        with self._lock:
            if claims["jti"] in self._jtis:
                self.refusals.append(f"{what} jti replayed")
                return None
            self._jtis.add(claims["jti"])
        return claims

    def _client_assertion(self, form: dict[str, str]) -> str | None:
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return self._refused("client assertion type wrong")
        try:
            unverified = jwt.decode(form["client_assertion"], options={"verify_signature": False})
        except jwt.PyJWTError:
            return self._refused("client assertion malformed")
        client_id = unverified.get("iss")
        key = self._client_keys.get(client_id) if isinstance(client_id, str) else None
        if key is None:
            return self._refused("client assertion from an unknown client")
        claims = self._verify_jwt(form["client_assertion"], key, what="client assertion")
        if claims is None:
            return None
        if claims["sub"] != client_id or form.get("client_id", client_id) != client_id:
            return self._refused("client assertion iss, sub and client_id differ")
        return client_id

    def _issue(self, grant: str, client: str | None, sub: str | None, scope: str | None, extra: dict[str, Any] | None = None) -> tuple[int, Any, dict[str, str]]:
        value = f"at-{next(self._serial)}-{secrets.token_urlsafe(12)}"
        with self._lock:
            self.issued.append({"grant": grant, "access_token": value, "client": client, "sub": sub, "scope": scope})
        return 200, {"access_token": value, "token_type": "Bearer", "expires_in": self.token_ttl, **(extra or {})}, {}

    def _refresh_grant(self, client: str | None, form: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        presented = form.get("refresh_token", "")
        with self._lock:
            known = self._refresh.get(presented)
            if known is not None and not known["active"]:
                self.reuses += 1
        if known is None or known["client"] != client:
            return self._refuse(400, "invalid_grant", "refresh token unknown")
        if not known["active"]:
            return self._refuse(400, "invalid_grant", "refresh token reused after rotation")
        extra: dict[str, Any] = {}
        if self.rotate_refresh_tokens:
            with self._lock:
                known["active"] = False
            extra["refresh_token"] = self.refresh_token(client or "", sub=known["sub"])
        return self._issue("refresh_token", client, known["sub"], form.get("scope"), extra)

    def _jwt_bearer_grant(self, client: str | None, form: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        assertion = form.get("assertion", "")
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            return self._refuse(400, "invalid_grant", "assertion malformed")
        key = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if key is None:
            return self._refuse(400, "invalid_grant", "assertion from an unknown issuer")
        claims = self._verify_jwt(assertion, key, what="assertion")
        if claims is None:
            return 400, {"error": "invalid_grant"}, {}
        with self._lock:
            self.assertions.append(claims)
        return self._issue("jwt_bearer", client, claims["sub"], claims.get("scope") or form.get("scope"))

    # ------------------------------------------------------------ grants, set up by tests
    def refresh_token(self, client_id: str = "rr", *, sub: str = "alice", value: str | None = None) -> str:
        """Issue a refresh token to `client_id` (what a user's consent would have given rr)."""
        token = value or f"rt-{next(self._serial)}-{secrets.token_urlsafe(16)}"
        with self._lock:
            self._refresh[token] = {"client": client_id, "sub": sub, "active": True}
        return token

    def refresh_token_active(self, token: str) -> bool:
        with self._lock:
            return bool(self._refresh.get(token, {}).get("active"))

    def register_client_key(self, client_id: str, private_key: Any) -> None:
        """Accept private_key_jwt assertions from `client_id` signed by this key."""
        with self._lock:
            self._client_keys[client_id] = private_key.public_key()

    def trust_issuer(self, issuer: str, private_key: Any) -> None:
        """Accept jwt-bearer assertions from `issuer` signed by this key."""
        with self._lock:
            self._issuers[issuer] = private_key.public_key()

    def _introspect(self, token: str) -> dict[str, Any]:
        with self._lock:
            known = self._opaque.get(token)
        exp = known.get("exp") if known is not None else None
        if known is None or not known.get("active") or (isinstance(exp, (int, float)) and exp <= time.time()):
            return {"active": False}
        return dict(known)


class Clock:
    """A settable clock for caches under test."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def run_with_http(body: Callable[[Any], Any]) -> Any:
    """asyncio.run(body(http)) with an identity Http client, closed afterwards."""
    import asyncio

    from rr_addon.identity import Http

    async def main() -> Any:
        http = Http()
        try:
            return await body(http)
        finally:
            await http.aclose()

    return asyncio.run(main())


def pem(private_key: Any) -> str:
    """A private key as unencrypted PKCS#8 PEM (what a key file holds)."""
    from cryptography.hazmat.primitives import serialization

    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def service_account(private_key: Any, *, client_email: str = "rr-test@project.iam.gserviceaccount.com", token_uri: str, key_id: str = "sa-key-1") -> str:
    """A Google service-account key file (JSON text) for `private_key`."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "project",
            "private_key_id": key_id,
            "private_key": pem(private_key),
            "client_email": client_email,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }
    )
