"""Admin endpoints of the control plane that reuse the `rr` commands' own work
(`rr token`, `rr secret status`, `rr explain` with --server): installed by
`rr control-plane serve` next to rr_addon.hybrid.admin_api's. They live in the
cli layer because that work does (explain admits a token through the gate)."""

from __future__ import annotations

import io
import logging
from typing import Any, Callable

logger = logging.getLogger("rr.controlplane")


def token_mint(cp: Any, req: dict, _: dict) -> dict:
    from rr_addon.cli.tokens import MintRefused, mint_token

    b = req["body"] or {}
    try:
        max_requests = b.get("max_requests")
        encoded, token, notes = mint_token(
            cp.engine, cp.keyring, str(b.get("proxy") or ""), str(b.get("credential") or ""), str(b.get("ttl") or ""),
            [str(t) for t in b.get("target") or []], [str(a) for a in b.get("allow") or []],
            int(max_requests) if max_requests is not None else None, str(b.get("note") or ""),
            str(b["jwt"]) if b.get("jwt") is not None else None,
        )
    except MintRefused as e:
        return {"error": str(e)}
    logger.info("rr control plane: admin %s minted %s for %s/%s", req["admin"], token.id, token.proxy, token.credential)
    return {"token": encoded, "id": token.id, "notes": notes}


def tokens(cp: Any, req: dict, _: dict) -> dict:
    from rr_addon.store import minted

    return {"tokens": minted.listing(cp.engine)}


def token_revoke(cp: Any, req: dict, _: dict) -> dict:
    from rr_addon.store import minted

    token_id = str((req["body"] or {}).get("id") or "")
    result = minted.revoke(cp.engine, token_id)
    if result == "revoked":
        logger.info("rr control plane: admin %s revoked %s", req["admin"], token_id[:80])
    return {"result": result}


def secret_status(cp: Any, req: dict, _: dict) -> dict:
    from rr_addon.cli.secrets import collect

    return {"secrets": collect(cp.engine)}


def explain(cp: Any, req: dict, _: dict) -> dict:
    from rich.console import Console

    from rr_addon.cli import explaining
    from rr_addon.explanation import explanation_tree
    from rr_addon.store import config_store

    b = req["body"] or {}
    method, url = str(b.get("method") or ""), str(b.get("url") or "")
    try:
        headers = [(str(k).lower(), str(v)) for k, v in b.get("headers") or []]
        facts = explaining.facts_of(method, url, headers, b.get("data"))
        raw_claims = b.get("claims") or {}
        if not isinstance(raw_claims, dict):
            raise ValueError("claims must be a JSON object (name: value)")  # a 400
        claims = {str(k): str(v) for k, v in raw_claims.items()}
        snap = config_store.load_snapshot(cp.engine, cp.keyring)
        done = explaining.explain(snap, method, url, facts, b.get("credential"), b.get("token"), claims)
    except explaining.Unexplainable as e:
        return {"error": str(e)}
    width = min(max(int(b.get("width") or 100), 40), 400)
    out = Console(file=io.StringIO(), width=width, force_terminal=True, color_system="standard", record=True)
    out.print(explanation_tree(done.title, done.explanation))
    return {"notes": done.notes, "tree": out.export_text(styles=True), "exit": done.exit_code}


def handlers() -> dict[tuple[str, str], Callable[[Any, dict, dict], Any]]:
    return {
        ("POST", "/v1/admin/token-mint"): token_mint,
        ("GET", "/v1/admin/tokens"): tokens,
        ("POST", "/v1/admin/token-revoke"): token_revoke,
        ("GET", "/v1/admin/secret-status"): secret_status,
        ("POST", "/v1/admin/explain"): explain,
    }
