"""The one translation between mitmproxy flows and core values."""

from __future__ import annotations

import json
from urllib.parse import unquote

from mitmproxy import http

from rr_addon import wire
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
    if decision.code == "unauthenticated":
        msg += "; present an rr credential in Proxy-Authorization, X-RR-Authorization or Authorization"
    return msg


def error_response(code: str, message: str, request_id: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> http.Response:
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}).encode()
    headers = http.Headers(
        [
            *((k.encode(), v.encode()) for k, v in JSON_HEADERS),
            (b"rr-request-id", request_id.encode()),
            (b"rr-proxy-code", code.encode()),
            *((k.encode(), v.encode()) for k, v in extra_headers),
        ]
    )
    return http.Response.make(STATUS[code], body, headers)


def decision_response(decision: Decision, request_id: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> http.Response:
    assert decision.code is not None
    return error_response(decision.code, error_message(decision), request_id, extra_headers)


def strip_headers(request: http.Request, names: frozenset[str]) -> None:
    for name in names:
        if name in request.headers:
            del request.headers[name]


def show_injection(request: http.Request, injection: Injection) -> None:
    """Put the placeholders on the flow (the real values are applied on the wire: see rr_addon.wire)."""
    for name, _wire_value, shown in injection.headers:
        request.headers[name] = shown
    if injection.query:
        names = {n for n, _, _ in injection.query}
        path, sep, query = request.path.partition("?")
        kept = [p for p in query.split("&") if p and unquote(p.partition("=")[0]) not in names] if sep else []
        kept.append(wire.query_suffix(injection, wire=False))
        request.path = path + "?" + "&".join(kept)
