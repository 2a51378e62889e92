"""Redaction over the JSON text (`Redactor.redact_json_text`, `process_response`'s
fast paths) against the document walk they replace (`Redactor.redact_json`, kept
in core as the slow path and used here as the oracle): identical output on a
generated corpus and on fixed adversarial cases.

"Identical" is: the same counts, and the same document once both outputs are
parsed and written by `dump_json` (the text path keeps the original formatting
and untouched escapes; the walk re-serialises)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, strategies as st

from rr_addon.policy.filters_schema import RedactEntry
from rr_addon.policy.bodies import JsonError, dump_json, parse_json
from rr_addon.policy.filters import apply_filters, compile_filter
from rr_addon.policy.json_text import JsonStrings
from rr_addon.policy.redact import BUILTIN, DETECTOR_NAMES, HASH, MASK, Redactor, compile_redactor, custom_detector, scrub_document
from rr_addon.core.responses import Pipeline, process_response
from rr_addon.policy.scrub import replacement_pairs, scrub_bytes

from tests.policy.test_redact import FALSE_POSITIVES, TRUE_POSITIVES

KEY = b"text-key"
REDACTORS = [
    Redactor([(BUILTIN[n], MASK) for n in DETECTOR_NAMES], KEY),
    Redactor([(BUILTIN[n], HASH) for n in DETECTOR_NAMES], KEY),
    Redactor([(BUILTIN[n], MASK) for n in ("email", "credit_card", "secret")], KEY),
    Redactor([(BUILTIN["phone"], HASH), (BUILTIN["ip_address"], MASK), (BUILTIN["iban"], MASK)], KEY),
]

# Fragments the generated strings are glued from: every detector's true and false
# positives, and what sits next to them in JSON (quotes, backslashes, slashes,
# control characters, non-ASCII, separators that touch a match's boundaries).
FRAGMENTS = [t for _, t in TRUE_POSITIVES] + [t for _, t in FALSE_POSITIVES] + [
    " ", "\n", "\t", '"', "\\", "/", "@", ".", "-", ":", "::", "+", "(", ")", ",", "x", "_", "0", "7", "42",
    "ü", "用户", "😀", "\x00", "\x1f", "\u2028", "\ufeff", "é@example.com", "a@b", ".co", "uk415-555-0100",
    "4242 4242", " 4242 4242", "DE89 ", "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----",
]  # fmt: skip

strings = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=6).map("".join)
numbers = st.integers(min_value=-(10**20), max_value=10**20) | st.sampled_from([4242424242424242, 4155550100, 192168001001, 0])
leaves = strings | numbers | st.booleans() | st.none()
documents = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(strings, inner, max_size=5),
    max_leaves=25,
)


def write(doc, rnd: random.Random) -> bytes:
    """A valid JSON text of `doc` in one of many spellings: stdlib and orjson
    output, indentation, and every character escaped at random (\\uXXXX, \\/)."""
    style = rnd.randrange(5)
    if style == 0:
        return dump_json(doc)
    if style == 1:
        return json.dumps(doc).encode()  # ensure_ascii: non-ASCII as \\uXXXX
    if style == 2:
        return json.dumps(doc, ensure_ascii=False, indent=rnd.choice([None, 1, "\t"])).encode()

    def lit(s: str) -> str:
        out = []
        for ch in s:
            r = rnd.random()
            if ch == "/" and r < 0.5:
                out.append("\\/")
            elif r < 0.3 or ch in '"\\' or ord(ch) < 0x20:
                out.append(json.dumps(ch, ensure_ascii=True)[1:-1] if r >= 0.15 or ord(ch) > 0xFFFF else f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'

    def node(x) -> str:
        ws = rnd.choice(["", " ", "\n  "])
        if isinstance(x, str):
            return lit(x)
        if isinstance(x, dict):
            return "{" + ws + ("," + ws).join(f"{lit(k)}{ws}:{ws}{node(v)}" for k, v in x.items()) + ws + "}"
        if isinstance(x, list):
            return "[" + ws + ("," + ws).join(node(v) for v in x) + ws + "]"
        return json.dumps(x)

    return (rnd.choice(["", " \n"]) + node(doc)).encode()


def oracle(redactor: Redactor, data: bytes) -> tuple[bytes, dict[str, int]]:
    doc, counts = redactor.redact_json(parse_json(data))
    return dump_json(doc), counts


def check(redactor: Redactor, data: bytes) -> None:
    out, counts = redactor.redact_json_text(data)
    want, want_counts = oracle(redactor, data)
    assert counts == want_counts
    assert dump_json(parse_json(out)) == want
    if not counts:
        assert out is data  # nothing redacted: the text is passed on as it was


@given(documents, st.randoms(use_true_random=False), st.sampled_from(range(len(REDACTORS))))
def test_text_redaction_matches_the_document_walk(doc, rnd, which):
    check(REDACTORS[which], write(doc, rnd))


ADVERSARIAL = [
    b'{"a": "john\\u0040example.com"}',  # the @ escaped
    b'{"a": "john@example\\u002ecom"}',  # a match split by an escape
    b'{"a": "https:\\/\\/hooks.slack.com\\/services\\/T0000\\/B0000\\/XXXXXXXXXXXXXXXXXXXXXXXX"}',
    b'{"john@example.com": "key, not value", "v": "a@example.com"}',  # keys stay
    b'{"a" : "x@example.com" , "b@example.com"\n:\t"y"}',  # whitespace around colons
    b'[4242424242424242, "4242424242424242", 4155550100, "415-555-0100"]',  # numbers stay
    b'"top@example.com"',
    b'{"q": "\\"a@example.com\\"", "r": "\\\\", "s": "b@example.com\\\\"}',  # escaped quotes and backslashes
    b'{"k\\"": "c@example.com", "\\\\": "d@example.com"}',
    b'{"a": "z\\u00f6e@b\\u00fccher.de", "b": "zo\xc3\xab@b\xc3\xbccher.de"}',  # non-ASCII, escaped and raw
    b'{"pem": "-----BEGIN RSA PRIVATE KEY-----abc", "next": "a@example.com"}',  # a key cut off at the string's end
    b'{"pem": "-----BEGIN RSA PRIVATE KEY-----\\nabc\\n-----END RSA PRIVATE KEY----- a@example.com"}',
    b'{"x": "a@b.co415-555-0100", "y": "10.0.0.1john@example.com"}',  # glued values, overlaps
    b'{"x": "2001:db8::ff00:42:8329john.doe@example.com", "y": "DE89 3704 0044 0532 0130 00"}',
    b'{"logo": "logo@2x.png", "t": "1700000000004", "ssn": "536-22-1234", "ip": "::ffff:192.0.2.128"}',
    b'{"a": "\\ud83d\\ude00 4242 4242 4242 4242 \\ud83d\\ude00"}',  # a surrogate pair escaped
    b'{"a": ["", "x", "\\"", ":", "\\"a@example.com"]}',
    b"[]",
    b"{}",
    # without a backslash (json_text.value_spans): several matches per literal, keys
    # right before their values, a key's matches then its value's, literals that touch
    b'{"a@example.com b@example.com":"c@example.com d@example.com","e@example.com"  \n :"f@example.com"}',
    b'["", "a@example.com", "", "b@example.com 4242424242424242 c@example.com"]',
    b'{"x":"4242424242424242","4242424242424242":"y","z":["john@example.co.uk415-555-0100"]}',
    b' \n"a@example.com 10.0.0.1john@example.com" ',
    b'{"n": 4242424242424242, "s": "4242424242424242", "k": {"4242424242424242": 4242424242424242}}',
    b'{"deep": ' + b"[" * 100 + b'"a@example.com"' + b"]" * 100 + b"}",
]


@pytest.mark.parametrize("data", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
@pytest.mark.parametrize("which", range(len(REDACTORS)))
def test_adversarial_texts(data, which):
    check(REDACTORS[which], data)


def test_escaped_values_are_found_and_written_back_escaped_correctly():
    r = REDACTORS[0]
    out, counts = r.redact_json_text(b'{"a": "mail: john\\u0040example.com \\"quoted\\"\\n", "k\\u0040x.com": 1}')
    assert counts == {"email": 1}
    assert parse_json(out) == {"a": 'mail: [REDACTED:EMAIL] "quoted"\n', "k@x.com": 1}
    assert out.endswith(b', "k\\u0040x.com": 1}')  # the key, and the formatting, untouched


def test_custom_detectors_are_refused():
    r = Redactor([(custom_detector("x+"), MASK)], KEY)
    assert not r.scans_text
    with pytest.raises(ValueError):
        r.redact_json_text(b'"x"')
    with pytest.raises(ValueError):
        r.finds_nothing(b'"x"')


def test_json_strings_keys_values_and_escaped_quotes():
    data = b'{"a\\"b": "v1", "k": ["x", "y\\\\"], "z": "\\\\\\"q"}'
    js = JsonStrings(data)
    probes = [data.index(b"a\\"), data.index(b"v1"), data.index(b"k"), data.index(b'"x"') + 1, data.index(b"q"), data.index(b"["), data.index(b": ")]
    ks = js.locate_all(probes)
    assert [js.keys[k] if k >= 0 else None for k in ks] == [True, False, True, False, False, None, None]
    assert [data[js.starts[k] : js.ends[k]] for k in ks if k >= 0] == [b'a\\"b', b"v1", b"k", b"x", b'\\\\\\"q']
    assert sorted(data[js.starts[k] : js.ends[k]] for k in js.with_escapes()) == [b'\\\\\\"q', b'a\\"b', b"y\\\\"]


# --------------------------------------------------------------------------
# process_response: the text paths against the document walk it used before


def reference_process_json(pipeline: Pipeline, body: bytes, scrub) -> tuple[bytes | None, dict[str, int] | None]:
    """process_response's JSON branch as it was: parse, filter, walk, scrub, dump
    (None, None where it gives up on JSON and the text path takes over)."""
    try:
        doc = parse_json(body)
        if pipeline.filters:
            doc = apply_filters(doc, pipeline.filters)
        counts = {}
        if pipeline.response_redactor is not None:
            doc, counts = pipeline.response_redactor.redact_json(doc)
        if scrub and (b"\\u" in body or b"\\/" in body or any(secret in body for secret, _ in scrub)):
            doc, _ = scrub_document(doc, scrub)
        return scrub_bytes(dump_json(doc), scrub), counts
    except JsonError:
        return None, None


FILTER = compile_filter(destroy_paths=["$.data[*].card"])
PIPELINES = [
    Pipeline(response_redactor=REDACTORS[0]),
    Pipeline(response_redactor=REDACTORS[2], filters=(FILTER,)),
    Pipeline(response_redactor=compile_redactor([RedactEntry(detectors=["email", {"custom": "tok-[0-9]+"}])], key=KEY, direction="response")),
]
SCRUB = replacement_pairs(["sk_live_abcdefghijklmnop"], "[rr:api/live]")


@given(documents, st.randoms(use_true_random=False), st.sampled_from(range(len(PIPELINES))), st.booleans())
def test_process_response_matches_the_reference(doc, rnd, which, scrubbing):
    pipeline = PIPELINES[which]
    body = write({"data": [{"card": "4242424242424242", "v": doc}], "w": doc}, rnd)
    scrub = SCRUB if scrubbing else ()
    got = process_response(pipeline, 200, "application/json", None, body, scrub, 1 << 20)
    want, counts = reference_process_json(pipeline, body, scrub)
    assert got.decision is None and want is not None
    assert got.redactions == counts
    assert dump_json(parse_json(body if got.body is None else got.body)) == dump_json(parse_json(want))


def test_nothing_to_redact_passes_the_body_on_unparsed():
    clean = b'{"id": "cus_1", "note": "nothing here", "n": 1.50}'
    out = process_response(Pipeline(response_redactor=REDACTORS[0]), 200, "application/json", "gzip", __import__("gzip").compress(clean), (), 1 << 20)
    assert out.body is None and out.redactions == {}  # the original, still compressed, goes on
    out = process_response(Pipeline(response_redactor=REDACTORS[0]), 200, "application/json", None, clean, SCRUB, 1 << 20)
    assert out.body == clean


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "b@example.com"',  # not JSON: redacted as text, keys and all
        b'{"b@example.com": 1',
        b'{"a": "x"} trailing a@example.com',
        b'{"a": "\xff", "b": "a@example.com"}',  # not UTF-8
        b"[" * 300 + b'"a@example.com"' + b"]" * 300,  # too deep for dump_json: text too
        b'{"a": "a\\u0040example.com"}',
    ],
)
def test_bodies_that_are_not_json_still_match_the_reference(body):
    pipeline = Pipeline(response_redactor=REDACTORS[0])
    got = process_response(pipeline, 200, "application/json", None, body, (), 1 << 20)
    want, counts = reference_process_json(pipeline, body, ())
    if want is None:  # the reference's text fallback
        text, counts = REDACTORS[0].redact_text(body.decode("utf-8", "surrogateescape"))
        want = text.encode("utf-8", "surrogateescape")
        assert (got.body if got.body is not None else body) == want
    else:
        assert dump_json(parse_json(got.body)) == want
    assert got.redactions == counts
