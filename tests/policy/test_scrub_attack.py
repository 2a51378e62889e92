"""Adversarial checks of the echo scrubber (rr_addon.policy.scrub): each test is a
spelling of an injected secret that a client decodes back to the secret, or a body
that makes the scrubber's work grow far beyond the body's size."""

import sys

import pytest

import rr_addon.policy.scrub as scrub
from rr_addon.policy.scrub import StreamScrubber, replacement_pairs, scrub_bytes


def pairs(*secrets):
    return replacement_pairs(list(secrets), "[rr:api/live]")


def streamed(data_chunks, p):
    s = StreamScrubber(p)
    out = []
    for c in [*data_chunks, b""]:
        r = s(c)
        out.append(r if isinstance(r, bytes) else b"".join(r))
    return b"".join(out)


def test_a_secret_holding_a_percent_sequence_with_a_json_escaped_quote_is_masked():
    # json.dumps('p%41ss"word') == '"p%41ss\\"word"': a JSON client reads the secret back.
    # The decoder reads every encoding at once, so the literal "%41" is decoded to "A".
    data = b'{"auth": "p%41ss\\"word"}'
    assert b"p%41ss" not in scrub_bytes(data, pairs('p%41ss"word'))


def test_a_secret_holding_a_backslash_n_echoed_as_html_is_masked():
    # html.escape('a\\nb&cdef') == 'a\\nb&amp;cdef': the literal "\n" is decoded as a JSON newline
    data = b"<p>a\\nb&amp;cdef</p>"
    assert b"cdef" not in scrub_bytes(data, pairs("a\\nb&cdef"))


def test_a_literal_backslash_before_a_percent_encoded_secret_does_not_hide_it():
    # `\` only escapes in JSON; a URL or HTML client decodes "\%73k%2Flive-abc" to "\sk/live-abc"
    data = b"path=C:\\%73k%2Flive-abc"
    assert b"live-abc" not in scrub_bytes(data, pairs("sk/live-abc"))


def test_a_streamed_escaped_backslash_split_at_a_chunk_boundary_does_not_hide_the_secret():
    # '\\\\' is one escaped backslash; the secret follows, JSON-escaped (Go writes & as \u0026).
    # Whole, it is masked; split right after the escaped backslash, the first backslash is
    # emitted, the second held, and the next chunk sees an odd run: "escaped", skipped.
    data = b'{"x":"\\\\ab\\u0026cdefgh"}'
    p = pairs("ab&cdefgh")
    assert b"cdefgh" not in scrub_bytes(data, p)
    i = data.index(b"ab\\u0026")
    assert b"cdefgh" not in streamed([data[:i], data[i:]], p)


def test_an_html_reference_with_many_leading_zeros_is_masked():
    # the candidate search accepts any number of zeros (&#0*115;), the decoder only 7 digits;
    # html.unescape and browsers decode "&#00000115;" to "s"
    data = "".join(f"&#{ord(c):011d};" for c in "sk-live-abc").encode()
    assert scrub_bytes(data, pairs("sk-live-abc")) != data


def test_a_false_start_overlapping_the_real_one_does_not_hide_it():
    # candidates are searched without overlap: "xyxy" + "\u0078yxyz/1" — the search takes
    # "xyxy\u0078y" (fails to decode to the secret) and resumes after the real start
    data = b"xyxy\\u0078yxyz/1"
    assert scrub_bytes(data, pairs("xyxyxyz/1")).count(b"*") > 0


def test_a_non_ascii_secret_through_php_htmlentities_is_masked():
    # htmlentities('pässword123') == 'p&auml;ssword123' (named references beyond the five)
    data = "p&auml;ssword123".encode()
    assert scrub_bytes(data, pairs("pässword123")) != data


def test_a_secret_in_a_json_document_embedded_as_a_json_string_is_masked():
    # an echo of a JSON request body as a string field ({"data": "..."}): json-in-json
    data = b'{"data": "{\\"k\\": \\"sk\\\\/live-abc\\"}"}'
    assert b"live-abc" not in scrub_bytes(data, pairs("sk/live-abc"))


def test_a_body_of_candidate_starts_costs_no_python_per_candidate():
    # A body of the secret's first six characters (a public key prefix such as "sk-pro")
    # followed by an escape: every 8 bytes begins a candidate. A scrubber that checked
    # each in Python took 56 s of CPU for 1 MiB on the event loop. Count Python calls
    # instead of timing: the scan must stay native whatever the body holds.
    secret = "sk-proj-" + "A1b2C3d4" * 6
    p = pairs(secret)
    scrub_bytes(b"warm \\/", p)  # the programs are built once per set of secrets
    body = b"sk-pro\\/" * 8192  # 64 KiB
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        out = scrub_bytes(body, p)
        stream = scrub.StreamScrubber(p)
        for i in range(0, len(body), 4096):
            stream(body[i : i + 4096])
        stream(b"")
    finally:
        sys.setprofile(None)
    assert out == body
    assert calls < 200, f"{calls} Python calls for a {len(body)}-byte body"


def test_a_secret_ending_in_an_escape_introducer_split_after_it_streams_as_the_whole_body():
    # html.escape('#X#0~ &ac"b<&') ends '&lt;&amp;'. Cut after the final '&': the held
    # text matches the secret with a literal '&' and is masked there, then "amp;" goes
    # out on its own: the caller learns the last character (and a trailing '\\' would
    # swallow the quote that follows it in a JSON string).
    secret = '#X#0~ &ac"b<&'
    data = b"x: #X#0~ &amp;ac&quot;b&lt;&amp;\n"
    p = pairs(secret)
    i = data.index(b"&amp;\n") + 1
    assert streamed([data[:25], data[25:i], data[i:]], p) == scrub_bytes(data, p)
