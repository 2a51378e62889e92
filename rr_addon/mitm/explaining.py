"""`rr.explain` and mitmweb's rr view: a flow's decision tree, re-evaluated with the loaded configuration."""

from __future__ import annotations

import dataclasses

from mitmproxy import http

from rr_addon.core.decide import Limits, explain
from rr_addon.core.snapshot import Snapshot
from rr_addon.explanation import explanation_tree, plain
from rr_addon.mitm import flows
from rr_addon.mitm.requests import request_body


def explain_flow(snap: Snapshot | None, f: http.HTTPFlow, limits: Limits) -> str:
    meta = f.metadata.get("rr")
    if snap is None:
        return "rr has no configuration loaded"
    if not meta or not meta.get("proxy"):
        return f"{f.id}: no authenticated rr decision on this flow"
    caller = snap.proxies.get(meta["proxy"]).callers.get(meta["credential"]) if meta["proxy"] in snap.proxies else None
    if caller is None:
        return f"{f.id}: credential {meta['proxy']}/{meta['credential']} is no longer configured"
    body = request_body(f, limits.inspect_bytes)
    facts = dataclasses.replace(flows.request_facts(f), body=body if isinstance(body, bytes) else None)
    title = f"{f.request.method} {f.request.pretty_url} as {caller.proxy}/{caller.name} (configuration version {snap.version})"
    if meta.get("config_version") not in (None, snap.version):
        title += f"; decided under version {meta['config_version']}"
    return plain(explanation_tree(title, explain(snap, caller, facts, limits)))
