"""rr_addon.mitm.webview: the comment and marker mitmweb shows for each kind of decision."""

from __future__ import annotations

import pytest

from rr_addon.mitm import webview
from mitmproxy.utils.emoji import emoji


def meta(**kw):
    base = dict.fromkeys(("proxy", "credential", "channel", "target", "target_credential", "scope", "rule", "code", "status"))
    base.update(result="allow", reason="all scopes allow")
    base.update(kw)
    return base


CALLER = dict(proxy="billing", credential="agent-1", target="stripe", target_credential="live")


@pytest.mark.parametrize(
    "m, expected",
    [
        pytest.param(meta(**CALLER), "rr allow · billing/agent-1 → stripe/live", id="allow"),
        pytest.param(meta(**CALLER, filtered=True, redactions={"email": 2, "card": 1}), "rr allow · billing/agent-1 → stripe/live · filtered · 3 redacted", id="filtered"),
        pytest.param(
            meta(**CALLER, result="deny", code="access-denied", scope="proxy", rule="no-deletes", reason="denied by rule"),
            "rr deny access-denied · billing/agent-1 → stripe/live · proxy rule no-deletes",
            id="rule",
        ),
        pytest.param(
            meta(**CALLER, result="would-deny", code="access-denied", scope="target", rule="no-posts", reason="denied by rule"),
            "rr would-deny access-denied · billing/agent-1 → stripe/live · target rule no-posts",
            id="report-mode",
        ),
        pytest.param(
            meta(**CALLER, result="deny", code="quota-exceeded", scope="meter", rule="requests", reason="meter limit reached"),
            "rr deny quota-exceeded · billing/agent-1 → stripe/live · meter requests",
            id="meter",
        ),
        pytest.param(
            meta(proxy="billing", credential="agent-1", result="deny", code="unknown-target", scope="proxy", reason="host is not a target of this proxy"),
            "rr deny unknown-target · billing/agent-1 · proxy: host is not a target of this proxy",
            id="unknown-target",
        ),
        pytest.param(
            meta(result="deny", code="unauthenticated", reason="no caller credential presented"),
            "rr deny unauthenticated · no caller · no caller credential presented",
            id="unauthenticated",
        ),
    ],
)
def test_comment_names_caller_result_and_where(m, expected):
    assert webview.comment(m) == expected


def test_markers_are_text_symbols_mitmweb_knows():
    # mitmweb shows emoji[marker]; these two have a text presentation (no emoji font needed)
    assert {emoji[m] for m in webview.MARKERS.values()} == {"✖", "⚠"}
