"""What mitmweb (and mitmproxy's console) show of rr's decision on a flow.

- The flow comment names the caller, the result and, for a refusal, where it
  was decided: `rr deny access-denied · billing-agent/agent-1 → stripe/live ·
  proxy rule no-deletes`. mitmweb lists it in the comment column.
- The marker: mitmweb shows `emoji[name]` of a marker, which for most names is
  a colour emoji that renders as an empty box without an emoji font. rr uses
  ✖ (`:heavy_multiplication_x:`, U+2716) and ⚠ (`:warning:`, U+26A0): symbols
  with a text presentation, in common text fonts (DejaVu Sans, Liberation's
  fallbacks, Segoe UI Symbol, Apple's), and `~marked` still lists every flow
  rr refused.
- The `rr` content view: the decision on the selected flow — what rr did and
  the full decision tree — chosen automatically for rr's own answers and for
  requests without a body, and selectable ("View: rr") on any other request
  or buffered response of a flow rr decided (mitmproxy offers no view of a
  streamed response: "Content is missing"). It needs no command and no
  `@focus` (which in mitmweb is not the selected flow).
"""

from __future__ import annotations

from typing import Callable

from mitmproxy import contentviews, http

from rr_addon.core.terminal import printable

MARKERS = {"deny": ":heavy_multiplication_x:", "error": ":heavy_multiplication_x:", "would-deny": ":warning:", "would-hold": ":warning:"}


def caller(meta: dict) -> str:
    return f"{meta['proxy']}/{meta['credential']}" if meta.get("proxy") else "no caller"


def where(meta: dict) -> str:
    """Where a refusal was decided: the scope and rule, else the reason."""
    scope, rule = meta.get("scope"), meta.get("rule")
    if rule:
        return f"meter {rule}" if scope == "meter" else f"{scope} rule {rule}"
    if scope:
        return f"{scope}: {meta['reason']}"
    return meta.get("reason") or ""


def comment(meta: dict) -> str:
    result = meta["result"]
    head = f"rr {result}" if result == "allow" or not meta.get("code") else f"rr {result} {meta['code']}"
    who = caller(meta)
    if meta.get("target"):
        who += f" → {meta['target']}" + (f"/{meta['target_credential']}" if meta.get("target_credential") else "")
    parts = [head, who]
    if result != "allow":
        parts.append(where(meta))
    approval = meta.get("approval")
    if approval:  # a request that was held: how the hold ended, and who ended it
        parts.append(approval["state"] + (f" by {approval['by']}" if approval.get("by") else ""))
    if meta.get("filtered"):
        parts.append("filtered")
    redactions = sum((meta.get("redactions") or {}).values())
    if redactions:
        parts.append(f"{redactions} redacted")
    return " · ".join(p for p in parts if p)


def show(flow: http.HTTPFlow) -> None:
    """Put rr's decision (flow.metadata["rr"]) on the flow's comment and marker."""
    meta = flow.metadata["rr"]
    flow.comment = comment(meta)
    marker = MARKERS.get(meta["result"])
    if marker:
        flow.marked = marker


def summary(flow: http.HTTPFlow) -> str:
    """What rr did with the flow, as recorded when it decided."""
    meta = flow.metadata["rr"]
    rows = [
        ("request", printable(f"{flow.request.method} {flow.request.pretty_url}")),  # caller bytes: mitmproxy's console is a terminal
        ("request id", flow.id),
        ("caller", caller(meta) + (f" (via {meta['channel']})" if meta.get("channel") else "")),
        ("result", " ".join(str(x) for x in (meta["result"], meta.get("status"), meta.get("code")) if x)),
        ("reason", meta.get("reason") or "-"),
    ]
    if meta["result"] != "allow":
        rows.append(("decided at", where(meta) if meta.get("scope") else "-"))
    if meta.get("target"):
        rows.append(("target", f"{meta['target']}/{meta.get('target_credential') or '-'}"))
    if meta.get("subject"):
        rows.append(("token", f"subject {meta['subject']}, issuer {meta.get('issuer')}, {meta.get('verification')}"))
    if meta.get("filtered"):
        rows.append(("response", "filtered"))
    if meta.get("redactions"):
        rows.append(("redactions", ", ".join(f"{k} {v}" for k, v in sorted(meta["redactions"].items()))))
    rows.append(("configuration", f"version {meta.get('config_version')}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


class RRView(contentviews.Contentview):
    """The `rr` content view: `explain(flow)` renders the decision tree of a flow."""

    def __init__(self, explain: Callable[[http.HTTPFlow], str]) -> None:
        self._explain = explain

    @property
    def name(self) -> str:
        return "rr"

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        flow = metadata.flow
        if not isinstance(flow, http.HTTPFlow) or "rr" not in flow.metadata:
            return "rr has not decided this flow."
        return summary(flow) + "\n\n" + self._explain(flow)

    def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
        flow = metadata.flow
        if not isinstance(flow, http.HTTPFlow) or "rr" not in flow.metadata:
            return -1
        message = metadata.http_message
        if message is not None and message is flow.response and "rr-proxy-code" in message.headers:
            return 10  # rr's own answer: its JSON says less than the decision tree
        if message is not None and message is flow.request and not data:
            return 10  # a request without a body (GET, DELETE…): the decision is what there is to see
        return -1  # bodies keep their own view; "rr" is in the view menu
