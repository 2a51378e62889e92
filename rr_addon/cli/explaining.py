"""`rr explain`'s work, apart from printing: the request facts from the command
line, the caller (a credential name, or a token found or verified as the proxy
would), the decision trace. Shared by the local command and the control
plane's `/v1/admin/explain` (`rr explain --server`), so both decide alike;
every refusal is an `Unexplainable` with the message the operator sees."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from urllib.parse import urlsplit

from rr_addon import settings


class Unexplainable(ValueError):
    """A bad argument or a refused token: the message says which."""


def parse_headers(header: list[str]) -> list[tuple[str, str]]:
    headers = []
    for h in header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise Unexplainable(f"header {h!r} is not 'Name: value'")
        headers.append((name.strip().lower(), value.strip()))
    return headers


def parse_claims(claim: list[str]) -> dict[str, str]:
    claims = {}
    for c in claim:
        name, sep, value = c.partition("=")
        if not sep or not name:
            raise Unexplainable(f"claim {c!r} is not 'name=value'")
        claims[name] = value
    return claims


def facts_of(method: str, url: str, headers: list[tuple[str, str]], data: str | None):
    from rr_addon.core.types import RequestFacts

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unexplainable(f"{settings.without_userinfo(url)!r} is not an http(s) URL")
    headers = list(headers)
    body = data.encode() if data is not None else None
    if body is not None and not any(k == "content-type" for k, _ in headers) and data.lstrip()[:1] in ("{", "["):
        headers.append(("content-type", "application/json"))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise Unexplainable(f"{settings.without_userinfo(url)!r}: {e}") from None
    return RequestFacts(method.upper(), parts.scheme, parts.hostname, port, path, tuple(headers), (), body)


def find_caller(snap, name: str):
    proxy, sep, cred = name.partition("/")
    if sep:
        caller = snap.proxies.get(proxy).callers.get(cred) if proxy in snap.proxies else None
        if caller is None:
            raise Unexplainable(f"no proxy credential {name!r}")
        return caller
    matches = [p.callers[name] for p in snap.proxies.values() if name in p.callers]
    if not matches:
        raise Unexplainable(f"no proxy credential named {name!r}")
    if len(matches) > 1:
        raise Unexplainable(f"{name!r} names a credential of several proxies ({', '.join(c.proxy for c in matches)}): write PROXY/{name}")
    return matches[0]


def identify_token(snap, token: str, facts):
    """The caller a token belongs to, found the way the proxy finds it (rr_addon.gate: a
    stored digest, a minted token, else a verifier). Returns (caller, verified claims,
    minted token, a line saying which path accepted it)."""
    from rr_addon.gate import Gate, Verdict
    from rr_addon.identity.service import Identities

    identities = Identities()
    identities.rebuild(snap)
    presented = dataclasses.replace(facts, headers=(("x-rr-authorization", token),) + facts.headers)

    async def admit():
        try:
            return await Gate(identities).admit(snap, presented, time.time())
        finally:
            await identities.close()

    admitted = asyncio.run(admit())
    verified = admitted.verification or {}
    ident = admitted.outcome.identity if isinstance(admitted, Verdict) else admitted.admission.identity
    if ident is None:
        assert isinstance(admitted, Verdict)
        d = admitted.outcome.decision
        if verified.get("verification"):
            raise Unexplainable(f"token refused ({verified['verification']}): {d.reason}" + (f" [{d.detail}]" if d.detail else ""))
        raise Unexplainable("the token matches no proxy credential" if admitted.outcome.unmatched is not None else f"token refused: {d.reason}")
    caller = snap.proxies[ident.proxy].callers[ident.credential]
    if ident.token is not None:  # a minted token the gate accepted: its narrowing, as the proxy decodes it
        from rr_addon.core.callers import Presented
        from rr_addon.core.decide import presented_token

        return caller, None, presented_token(snap, Presented("explain", "", token)), f"token: minted token {ident.token}, a child of {caller.proxy}/{caller.name}"
    if verified.get("verification"):
        line = f"token: accepted by {caller.proxy}/{caller.name} via {verified['verification']}; subject {verified.get('subject')}, issuer {verified.get('issuer')}"
        return caller, dict(ident.claims or {}), None, line
    return caller, None, None, f"token: matches {caller.proxy}/{caller.name} ({caller.auth}, by digest)"


@dataclasses.dataclass
class Explained:
    notes: list[str]
    title: str
    explanation: object  # rr_addon.core.decide.Explanation

    @property
    def exit_code(self) -> int:
        o = self.explanation.outcome  # type: ignore[attr-defined]
        if o.decision.held and not o.report_only:
            return 3  # held for a person's approval
        if not o.decision.allowed and not o.report_only:
            return 2
        return 0


def explain(snap, method: str, url: str, facts, credential: str | None, token: str | None, claims: dict[str, str]) -> Explained:
    from rr_addon.core.decide import explain as explain_decision

    if (credential is None) == (token is None):
        raise Unexplainable("give exactly one of --credential or --token")
    notes: list[str] = []
    verified_claims = minted = None
    if token is not None:
        caller, verified_claims, minted, line = identify_token(snap, token, facts)
        notes.append(line)
    else:
        caller = find_caller(snap, credential or "")
    if minted is not None and claims:
        raise Unexplainable("--claim: a minted token carries the claims it was minted with")
    ex = explain_decision(snap, caller, facts, claims=claims or verified_claims, token=minted)
    title = f"{method.upper()} {settings.without_userinfo(url)} as {caller.proxy}/{caller.name} (configuration version {snap.version})"
    return Explained(notes, title, ex)
