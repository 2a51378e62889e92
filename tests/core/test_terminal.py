"""rr_addon.core.terminal: caller text made safe for a terminal."""

from __future__ import annotations

import logging

import pytest

from rr_addon.core.terminal import EscapeControls, printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("/v1/charges?limit=3", "/v1/charges?limit=3"),
        ("/a\x1b[2J", "/a\\x1b[2J"),  # clear screen
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),  # OSC window title
        ("\x1b]8;;https://e.example\x07click\x1b]8;;\x07", "\\x1b]8;;https://e.example\\x07click\\x1b]8;;\\x07"),  # OSC 8 link
        ("a\x9b2Jb", "a\\x9b2Jb"),  # C1 CSI
        ("\x00\t\n\r\x7f", "\\x00\\x09\\x0a\\x0d\\x7f"),
        ("abc\u202egnp.exe", "abc\\u202egnp.exe"),  # right-to-left override
        ("[red]X[/red] é ü 日本", "[red]X[/red] é ü 日本"),  # markup is text here; printable Unicode stays
        (403, "403"),
    ],
)
def test_printable(raw, shown):
    assert printable(raw) == shown


def record(msg, *args):
    return logging.LogRecord("rr", logging.INFO, __file__, 1, msg, args, None)


def test_filter_escapes_what_a_record_interpolates_and_keeps_numbers():
    r = record("%s %d %.1f (%s)", "GET /a\x1b[2J", 401, 1.5, ValueError("bad\x07"))
    assert EscapeControls().filter(r) and r.getMessage() == "GET /a\\x1b[2J 401 1.5 (bad\\x07)"
    r = record("%(path)s", {"path": "/\x1b"})
    EscapeControls().filter(r)
    assert r.getMessage() == "/\\x1b"


def test_filter_keeps_the_line_breaks_of_a_message_without_args():
    r = record("line one\x1b[31m\nline two")
    EscapeControls().filter(r)
    assert r.getMessage() == "line one\\x1b[31m\nline two"


def test_filter_is_idempotent():
    r = record("%s", "\x1b")
    EscapeControls().filter(r)
    EscapeControls().filter(r)  # a record can pass through several handlers
    assert r.getMessage() == "\\x1b"
