"""The one translation between mitmproxy flows and core values."""

from __future__ import annotations

import json
from urllib.parse import unquote

from mitmproxy import http
from mitmproxy.net.http import url

from rr_addon.mitm import wire
from rr_addon.core.inject import Injection
from rr_addon.core.types import STATUS, Decision, RequestFacts

JSON_HEADERS = (("content-type", "application/json"), ("cache-control", "no-store"))


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def request_facts(flow: http.HTTPFlow, tunnel_authorization: tuple[str, ...] = (), *, with_body: bool = False) -> RequestFacts:
    req = flow.request
    return RequestFacts(
        method=req.method,
        scheme=req.scheme,
        host=req.host,
        port=req.port,
        path=req.path,
        headers=tuple((_text(k).lower(), _text(v)) for k, v in req.headers.fields),
        tunnel_authorization=tunnel_authorization,
        body=req.raw_content if with_body else None,
        authority=req.authority,
        sni=flow.client_conn.sni if flow.client_conn.tls else None,
    )


def error_message(decision: Decision) -> str:
    msg = decision.reason
    if decision.rule:
        msg += f" (meter {decision.rule})" if decision.scope == "meter" else f" ({decision.scope} rule {decision.rule})"
    elif decision.code == "access-denied" and decision.scope:
        msg += f" ({decision.scope})"
    if decision.detail:
        msg += f": {decision.detail}"
    if decision.status == 407:
        msg += "; present an rr credential in Proxy-Authorization (the proxy URL's user:key)"
    elif decision.code == "unauthenticated":
        msg += "; present an rr credential in Proxy-Authorization, X-RR-Authorization or Authorization"
    return msg


# Clients that show one field of an error: a top-level "message" string (beside
# the error body's "error" object) and, over HTTP/1, the reason phrase (npm prints
# only the status line and `error`, which it stringifies as "[object Object]").
REALM = 'Basic realm="rr"'
_REASON_MAX = 200


def error_response(
    code: str, message: str, request_id: str, extra_headers: tuple[tuple[str, str], ...] = (), status: int | None = None
) -> http.Response:
    status = status or STATUS[code]
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}, "message": f"rr {code}: {message}"}).encode()
    headers = http.Headers(
        [
            *((k.encode(), v.encode()) for k, v in JSON_HEADERS),
            (b"rr-request-id", request_id.encode()),
            (b"rr-proxy-code", code.encode()),
            *((k.encode(), v.encode()) for k, v in extra_headers),
        ]
    )
    response = http.Response.make(status, body, headers)
    response.reason = reason_phrase(response.reason, code, message)
    return response


def reason_phrase(standard: str, code: str, message: str) -> str:
    """'Forbidden (rr access-denied: …)', printable ASCII only (the message may quote a host or path)."""
    text = "".join(c if " " <= c <= "~" else "?" for c in f"{standard} (rr {code}: {message}")
    return (text[: _REASON_MAX - 4] + "...)") if len(text) > _REASON_MAX - 1 else text + ")"


def decision_response(decision: Decision, request_id: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> http.Response:
    assert decision.code is not None
    if decision.status == 401:
        # a client that holds the rr key as its server credential (git, pip with a URL's user:key) sends it when challenged
        extra_headers = (("www-authenticate", REALM), *extra_headers)
    elif decision.status == 407:
        extra_headers = (("proxy-authenticate", REALM), *extra_headers)
    return error_response(decision.code, error_message(decision), request_id, extra_headers, decision.status)


def name_the_target(request: http.Request) -> None:
    """An HTTP/1 request goes out in origin-form (an absolute-form target that names the
    target host, checked by the core, is rewritten), with the target's Host when it had
    none: a shared front end would otherwise pick its default virtual host for the secret."""
    if request.authority and request.http_version.startswith("HTTP/1"):
        request.authority = ""
    if not request.authority and "host" not in request.headers:
        request.headers.insert(0, "host", url.hostport(request.scheme, request.host, request.port))


def strip_headers(request: http.Request, names: frozenset[str]) -> None:
    for name in names:
        if name in request.headers:
            del request.headers[name]


def show_injection(request: http.Request, injection: Injection) -> None:
    """Put the placeholders on the flow (the real values are applied on the wire: see rr_addon.mitm.wire)."""
    for name, _wire_value, shown in injection.headers:
        request.headers[name] = shown
    if injection.query:
        names = {n for n, _, _ in injection.query}
        path, sep, query = request.path.partition("?")
        kept = [p for p in query.split("&") if p and unquote(p.partition("=")[0]) not in names] if sep else []
        kept.append(wire.query_suffix(injection, wire=False))
        request.path = path + "?" + "&".join(kept)
