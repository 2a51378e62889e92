import pytest
from hypothesis import given, strategies as st

from rr_addon.policy.scrub import StreamScrubber, replacement_pairs, scrub_bytes, scrub_text

PAIRS = replacement_pairs(["sk_live_123_abc", "c2tfbGl2ZV8xMjM="], "[rr:api/live]")
M1 = b"[rr:api/live]**"  # same length as sk_live_123_abc
M2 = b"[rr:api/live]***"  # same length as the base64 form


def emitted(out) -> bytes:
    """What mitmproxy sends for one call: bytes, or a list of non-empty chunks."""
    if isinstance(out, bytes):
        assert out, "an empty chunk ends a chunked HTTP/1.1 body"
        return out
    assert all(out)
    return b"".join(out)


def stream(chunks, pairs=PAIRS):
    s = StreamScrubber(pairs)
    out = b"".join(emitted(s(c)) for c in chunks) + emitted(s(b""))
    return out, s.count


@pytest.mark.parametrize(
    "chunks, expected",
    [
        pytest.param([b"hello"], b"hello", id="nothing"),
        pytest.param([b'{"auth": "Bearer sk_live_123_abc"}'], b'{"auth": "Bearer ' + M1 + b'"}', id="whole"),
        pytest.param([b"Bearer sk_li", b"ve_123_abc end"], b"Bearer " + M1 + b" end", id="split"),
        pytest.param([b"s", b"k", b"_", b"live_", b"1", b"23", b"_abc"], M1, id="byte-by-byte"),
        pytest.param([b"sk_live_123_abcsk_live_123_abc"], M1 + M1, id="twice"),
        pytest.param([b"x c2tfbGl2ZV8xMjM= y"], b"x " + M2 + b" y", id="base64-form"),
        pytest.param([b"", b"abc", b""], b"abc", id="empty-chunks"),
    ],
)
def test_stream(chunks, expected):
    out, count = stream([c for c in chunks if c])  # b"" is the end-of-body signal
    assert out == expected
    assert count == sum(len(c) for c in chunks)


@given(st.binary(max_size=200), st.integers(0, 200), st.lists(st.integers(1, 50), max_size=20))
def test_stream_equals_whole_scrub(prefix, pos, cuts):
    data = prefix[:pos] + b"sk_live_123_abc" + prefix[pos:]
    chunks, i = [], 0
    for c in cuts:
        chunks.append(data[i : i + c])
        i += c
    chunks.append(data[i:])
    chunks = [c for c in chunks if c]
    out, _ = stream(chunks)
    assert out == scrub_bytes(data, PAIRS)
    assert b"sk_live_123_abc" not in out
    assert len(out) == len(data)


def test_text_and_no_pairs():
    assert scrub_text("a sk_live_123_abc b", PAIRS) == "a [rr:api/live]** b"
    assert stream([b"abc", b"def"], ())[0] == b"abcdef"


def test_short_secrets_are_masked_with_stars():
    assert replacement_pairs(["abc"], "[rr:api/live]") == ((b"abc", b"***"),)


def test_only_what_could_start_a_secret_is_held_back():
    s = StreamScrubber(PAIRS)
    assert emitted(s(b": ping\n\n")) == b": ping\n\n"  # an event passes at once, whole
    assert emitted(s(b"data: sk_li")) == b"data: "  # the start of a secret waits for the next chunk
    assert s(b"ve") == []  # nothing to send: no empty chunk
    assert emitted(s(b"_123_abc\n\n")) == M1 + b"\n\n"
    assert s(b"") == []


# ------------------------------------------------------------------ an echo in another spelling

from rr_addon.policy.scrub import scrub_stream  # noqa: E402
from rr_addon.testing.upstream import escaped  # noqa: E402

ODD = "sk/live+1 é😀&x"  # a slash, a plus, a space, non-ASCII, beyond U+FFFF, an ampersand
ODD_PAIRS = replacement_pairs([ODD], "[rr:api/live]")


def spell(ch: str, how: int) -> str:
    """One character the way encoder `how` writes it."""
    cp = ord(ch)
    if how == 1:
        if cp > 0xFFFF:
            hi, lo = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
            return f"\\u{hi:04X}\\u{lo:04x}"
        return f"\\u{cp:04x}"
    if how == 2:
        return "".join(f"%{b:02x}" for b in ch.encode())
    if how == 3:
        return f"&#x{cp:X};"
    if how == 4:
        return f"&#{cp};"
    if how == 5:
        return {"/": "\\/", "&": "&amp;", " ": "+"}.get(ch, ch)
    return ch


@pytest.mark.parametrize("style", ["json", "percent", "html", "mixed", "slash"])
def test_a_secret_escaped_any_way_is_masked_over_its_whole_spelling(style):
    data = ("before " + escaped(ODD, style) + " after").encode()
    out = scrub_bytes(data, ODD_PAIRS)
    assert out == b"before [rr:api/live]" + b"*" * (len(data) - len(b"before [rr:api/live] after")) + b" after"


def test_escapes_that_spell_something_else_are_left_alone():
    data = b'{"a": "x\\/y %41 &amp; \\u00e9 \\\\u0073k"}'
    assert scrub_bytes(data, ODD_PAIRS) == data
    # JSON inside a JSON string: the "s" escaped twice is still the secret
    assert scrub_bytes(b"\\\\u0073k\\\\\\/live", replacement_pairs(["sk/live"], "[rr:a/b]")) == b"*" * 16


def test_a_secret_that_holds_a_percent_sequence_is_masked_as_it_stands():
    pairs = replacement_pairs(["pa%41ss"], "[rr:a/b]")
    assert scrub_bytes(b"x pa%41ss y", pairs) == b"x ******* y"


def test_the_start_of_an_escape_is_held_back_and_a_line_end_is_not():
    assert scrub_stream(b"data: \\u00", ODD_PAIRS) == (b"data: ", b"\\u00")
    assert scrub_stream(b"data: sk%2", ODD_PAIRS) == (b"data: ", b"sk%2")
    assert scrub_stream(b"data: sk\\/li", ODD_PAIRS) == (b"data: ", b"sk\\/li")
    assert scrub_stream(b"data: s&#x6B;", ODD_PAIRS) == (b"data: ", b"s&#x6B;")
    assert scrub_stream(b"data: done\n\n", ODD_PAIRS) == (b"data: done\n\n", b"")
    s = StreamScrubber(ODD_PAIRS)
    assert emitted(s(b": ping\n\n")) == b": ping\n\n"


@given(
    st.binary(max_size=80),
    st.lists(st.integers(0, 5), min_size=len(ODD), max_size=len(ODD)),
    st.lists(st.integers(1, 40), max_size=30),
)
def test_a_mixed_spelling_streamed_in_any_pieces_never_leaves(noise, hows, cuts):
    noise = noise.replace(b"\\", b"").replace(b"%", b"").replace(b"&", b"")  # escapes of its own could join the secret's
    spelled = "".join(spell(c, h) for c, h in zip(ODD, hows)).encode()
    data = noise[: len(noise) // 2] + spelled + noise[len(noise) // 2 :]
    chunks, i = [], 0
    for c in cuts:
        chunks.append(data[i : i + c])
        i += c
    chunks.append(data[i:])
    out, count = stream([c for c in chunks if c], ODD_PAIRS)
    assert out == scrub_bytes(data, ODD_PAIRS)
    assert out == noise[: len(noise) // 2] + b"[rr:api/live]" + b"*" * (len(spelled) - 13) + noise[len(noise) // 2 :]
    assert count == len(data)


@given(
    st.lists(st.sampled_from([b"\\", b"\\\\", b"%", b"%2", b"&#", b"&amp", b";", b"u00", b"x", b"/", b"\n", b"sk", b"+"]), max_size=12),
    st.lists(st.integers(0, 5), min_size=len(ODD), max_size=len(ODD)),
    st.lists(st.integers(1, 40), max_size=30),
)
def test_streamed_in_any_pieces_amid_escape_debris_it_scrubs_as_the_whole_body_would(debris, hows, cuts):
    spelled = "".join(spell(c, h) for c, h in zip(ODD, hows)).encode()
    data = b"".join(debris[:3]) + b" " + spelled + b" " + b"".join(debris[3:])
    chunks, i = [], 0
    for c in cuts:
        chunks.append(data[i : i + c])
        i += c
    chunks.append(data[i:])
    out, _ = stream([c for c in chunks if c], ODD_PAIRS)
    assert out == scrub_bytes(data, ODD_PAIRS)
    assert spelled not in out and len(out) == len(data)


def test_the_programs_live_with_the_pairs_and_a_copy_leaves_them_behind():
    import copy
    import pickle

    pairs = replacement_pairs(["sk/kept"], "[rr:api/live]")
    assert scrub_bytes(b"sk\\/kept", pairs) == b"*" * 8
    assert pairs.compiled is not None  # built once, for as long as the configuration holds these pairs
    for other in (copy.deepcopy(pairs), pickle.loads(pickle.dumps(pairs))):
        assert other == pairs and other.compiled is None
