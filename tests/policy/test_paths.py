import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rr_addon.policy import paths
from rr_addon.policy.paths import CanonicalPath, PathError, canonicalize
from rr_addon.core import reasons

# Bypass attempts and ordinary paths: each with its canonical path or the refusal.
CORPUS = [
    # ordinary
    ("empty", "", "/"),
    ("root", "/", "/"),
    ("plain", "/v1/customers/cus_123", "/v1/customers/cus_123"),
    ("trailing-slash-kept", "/v1/customers/", "/v1/customers/"),
    ("sub-delims-kept", "/v1/a:b@c!$&'()*+,;=", "/v1/a:b@c!$&'()*+,;="),
    ("dot-file", "/.well-known/openid-configuration", "/.well-known/openid-configuration"),
    ("dots-inside-segment", "/v1/a..b/...", "/v1/a..b/..."),
    # case: paths are case-sensitive, kept as sent (rules use ignore_case)
    ("upper-case-kept", "/V1/Admin", "/V1/Admin"),
    # dot segments resolved
    ("dotdot", "/v1/../admin", "/admin"),
    ("dot", "/v1/./admin", "/v1/admin"),
    ("trailing-dot", "/v1/admin/.", "/v1/admin/"),
    ("trailing-dotdot", "/v1/admin/..", "/v1/"),
    ("dotdot-to-root", "/v1/..", "/"),
    ("dotdot-many", "/a/b/c/../../d", "/a/d"),
    # repeated slashes collapsed (before dot segments, like nginx)
    ("double-leading-slash", "//v1", "/v1"),
    ("double-slashes", "/v1//admin///x", "/v1/admin/x"),
    ("slashes-then-dotdot", "/v1//../admin", "/admin"),
    ("only-slashes", "////", "/"),
    # unreserved escapes decoded, others normalised to upper-case hex
    ("encoded-letters", "/%76%31/%61dmin", "/v1/admin"),
    ("encoded-tilde-dash", "/a%7e%2D%5F", "/a~-_"),
    ("encoded-dot-inside-segment", "/v1/a%2eb", "/v1/a.b"),
    ("encoded-reserved-kept", "/v1/a%3bb%3Fc%40", "/v1/a%3Bb%3Fc%40"),
    ("encoded-space", "/a%20b", "/a%20b"),
    ("percent-literal", "/100%25done", "/100%25done"),
    # characters that may not appear raw are encoded
    ("raw-space", "/a b", "/a%20b"),
    ("raw-brackets", "/a[0]{x}|^`<>\"", "/a%5B0%5D%7Bx%7D%7C%5E%60%3C%3E%22"),
    # unicode
    ("raw-unicode", "/café", "/caf%C3%A9"),
    ("encoded-unicode", "/caf%c3%a9", "/caf%C3%A9"),
    ("fullwidth-dots-are-not-dots", "/v1/．．/admin", "/v1/%EF%BC%8E%EF%BC%8E/admin"),
    ("c1-control-encoded", "/a\u0085", "/a%C2%85"),
    # refused: not origin-form
    ("relative", "v1/admin", PathError(reasons.PATH_NOT_ABSOLUTE)),
    ("absolute-form", "http://evil/admin", PathError(reasons.PATH_NOT_ABSOLUTE)),
    ("asterisk", "*", PathError(reasons.PATH_NOT_ABSOLUTE)),
    # refused: separators hidden by encoding
    ("encoded-slash", "/v1%2fadmin", PathError(reasons.PATH_ENCODED_SEPARATOR)),
    ("encoded-slash-upper", "/v1/%2F/admin", PathError(reasons.PATH_ENCODED_SEPARATOR)),
    ("encoded-backslash", "/v1/%5c..%5cadmin", PathError(reasons.PATH_ENCODED_SEPARATOR)),
    ("raw-backslash", "/v1\\..\\admin", PathError(reasons.PATH_BACKSLASH)),
    # refused: dot segments that only appear after decoding
    ("encoded-dotdot", "/v1/%2e%2e/admin", PathError(reasons.PATH_ENCODED_DOT_SEGMENT)),
    ("encoded-dotdot-upper", "/v1/%2E%2E/admin", PathError(reasons.PATH_ENCODED_DOT_SEGMENT)),
    ("half-encoded-dotdot", "/v1/.%2E/admin", PathError(reasons.PATH_ENCODED_DOT_SEGMENT)),
    ("half-encoded-dotdot-2", "/v1/%2e./admin", PathError(reasons.PATH_ENCODED_DOT_SEGMENT)),
    ("encoded-dot", "/v1/%2e/admin", PathError(reasons.PATH_ENCODED_DOT_SEGMENT)),
    ("encoded-trailing-dotdot", "/v1/admin/%2e%2e", PathError(reasons.PATH_ENCODED_DOT_SEGMENT)),
    # refused: dot segments with path parameters (Tomcat treats "..;" as "..")
    ("dotdot-semicolon", "/v1/admin/..;/", PathError(reasons.PATH_DOT_SEGMENT_PARAMETERS)),
    ("dotdot-params", "/v1/public/..;jsessionid=x/admin", PathError(reasons.PATH_DOT_SEGMENT_PARAMETERS)),
    ("dot-semicolon", "/v1/.;/admin", PathError(reasons.PATH_DOT_SEGMENT_PARAMETERS)),
    ("dotdot-encoded-semicolon", "/v1/..%3b/admin", PathError(reasons.PATH_DOT_SEGMENT_PARAMETERS)),
    # refused: double encoding (a double-decoding upstream would see something else)
    ("double-encoded-dotdot", "/v1/%252e%252e/admin", PathError(reasons.PATH_DOUBLE_ENCODING)),
    ("double-encoded-slash", "/v1%252fadmin", PathError(reasons.PATH_DOUBLE_ENCODING)),
    ("double-encoding-built-by-decoding", "/v1/%25%32%65%25%32%65/admin", PathError(reasons.PATH_DOUBLE_ENCODING)),
    # refused: NUL and control characters
    ("raw-nul", "/v1/admin\x00.json", PathError(reasons.PATH_CONTROL_CHARACTER)),
    ("encoded-nul", "/v1/admin%00.json", PathError(reasons.PATH_CONTROL_CHARACTER)),
    ("raw-newline", "/v1/admin\n", PathError(reasons.PATH_CONTROL_CHARACTER)),
    ("encoded-crlf", "/v1/a%0d%0aX-Injected:%201", PathError(reasons.PATH_CONTROL_CHARACTER)),
    ("encoded-del", "/v1/%7f", PathError(reasons.PATH_CONTROL_CHARACTER)),
    ("raw-tab", "/v1/\tadmin", PathError(reasons.PATH_CONTROL_CHARACTER)),
    # refused: fragment
    ("fragment", "/v1/admin#/public", PathError(reasons.PATH_FRAGMENT)),
    # refused: invalid escapes
    ("lone-percent", "/v1/%", PathError(reasons.PATH_INVALID_ESCAPE)),
    ("short-escape", "/v1/%2", PathError(reasons.PATH_INVALID_ESCAPE)),
    ("non-hex-escape", "/v1/%zz", PathError(reasons.PATH_INVALID_ESCAPE)),
    ("plus-hex-escape", "/v1/%+f", PathError(reasons.PATH_INVALID_ESCAPE)),
    ("space-hex-escape", "/v1/% f", PathError(reasons.PATH_INVALID_ESCAPE)),
    ("unicode-digit-escape", "/v1/%٣٣", PathError(reasons.PATH_INVALID_ESCAPE)),
    # refused: escapes that are not UTF-8
    ("overlong-dot", "/v1/%c0%ae%c0%ae/admin", PathError(reasons.PATH_INVALID_UTF8)),
    ("overlong-slash", "/v1%c0%afadmin", PathError(reasons.PATH_INVALID_UTF8)),
    ("overlong-3-byte", "/v1/%e0%80%ae", PathError(reasons.PATH_INVALID_UTF8)),
    ("lone-continuation", "/v1/%80", PathError(reasons.PATH_INVALID_UTF8)),
    ("truncated-sequence", "/v1/%c3", PathError(reasons.PATH_INVALID_UTF8)),
    ("sequence-split-by-slash", "/v1/%c3/%a9", PathError(reasons.PATH_INVALID_UTF8)),
    ("encoded-surrogate", "/v1/%ed%a0%80", PathError(reasons.PATH_INVALID_UTF8)),
    ("raw-undecodable-byte", "/v1/\udcff", PathError(reasons.PATH_INVALID_UTF8)),
    ("raw-then-escape-mix", "/v1/é%a9", PathError(reasons.PATH_INVALID_UTF8)),
    # refused: climbing above the root
    ("above-root", "/../admin", PathError(reasons.PATH_ABOVE_ROOT)),
    ("above-root-later", "/v1/../../admin", PathError(reasons.PATH_ABOVE_ROOT)),
    ("above-root-slashes", "//..//admin", PathError(reasons.PATH_ABOVE_ROOT)),
]


@pytest.mark.parametrize("raw, expected", [(r, e) for _, r, e in CORPUS], ids=[i for i, _, _ in CORPUS])
def test_corpus(raw, expected):
    if isinstance(expected, PathError):
        with pytest.raises(PathError) as info:
            canonicalize(raw)
        assert info.value.reason == expected.reason
        assert str(info.value) == expected.reason
    else:
        result = canonicalize(raw)
        assert result == CanonicalPath(expected, None)
        assert result.target == expected
        assert canonicalize(result.target) == result


def test_reasons_are_fixed_sentences():
    assert paths.REASONS == {
        "path does not start with '/'",
        "invalid percent-escape in path",
        "encoded '/' or '\\' in path",
        "backslash in path",
        "percent-encoded dot segment in path",
        "dot segment with parameters in path",
        "double percent-encoding in path",
        "NUL or control character in path",
        "'#' in path",
        "path is not valid UTF-8",
        "path climbs above the root",
        "dot segment between encoded slashes in path",
    }


# allow_encoded_slashes: `%2F` is a literal inside its segment, one canonical (upper-case) spelling.
ENCODED_SLASHES = [
    ("npm-scoped", "/@scope%2fname", "/@scope%2Fname"),
    ("npm-scoped-upper", "/@scope%2Fname", "/@scope%2Fname"),
    ("gitlab-project", "/api/v4/projects/group%2Fsub%2Frepo/issues", "/api/v4/projects/group%2Fsub%2Frepo/issues"),
    ("not-a-separator-for-dot-segments", "/a/b%2Fc/../d", "/a/d"),
    ("leading-and-trailing", "/%2Fa%2F", "/%2Fa%2F"),
    ("only-slash", "/x/%2F/y", "/x/%2F/y"),
    ("dotdot-between", "/a/b%2F..%2Fadmin", PathError(reasons.PATH_ENCODED_SLASH_DOT_SEGMENT)),
    ("encoded-dotdot-between", "/a/b%2F%2e%2e%2Fadmin", PathError(reasons.PATH_ENCODED_SLASH_DOT_SEGMENT)),
    ("dot-between", "/a/.%2Fadmin", PathError(reasons.PATH_ENCODED_SLASH_DOT_SEGMENT)),
    ("dotdot-params-between", "/a/x%2F..;y%2Fadmin", PathError(reasons.PATH_ENCODED_SLASH_DOT_SEGMENT)),
    ("backslash-still-refused", "/a/b%5cc", PathError(reasons.PATH_ENCODED_SEPARATOR)),
    ("double-encoded-still-refused", "/a/b%252Fc", PathError(reasons.PATH_DOUBLE_ENCODING)),
]


@pytest.mark.parametrize("raw, expected", [(r, e) for _, r, e in ENCODED_SLASHES], ids=[i for i, _, _ in ENCODED_SLASHES])
def test_encoded_slashes_opt_in(raw, expected):
    if isinstance(expected, PathError):
        with pytest.raises(PathError) as info:
            canonicalize(raw, encoded_slashes=True)
        assert info.value.reason == expected.reason
    else:
        result = canonicalize(raw, encoded_slashes=True)
        assert result.path == expected
        assert canonicalize(result.target, encoded_slashes=True) == result
    # without the opt-in every encoded slash is refused
    if "%2f" in raw.lower() and "%252" not in raw.lower():
        with pytest.raises(PathError):
            canonicalize(raw)



@pytest.mark.parametrize(
    "raw, path, query, target",
    [
        ("/v1/x?limit=10", "/v1/x", "limit=10", "/v1/x?limit=10"),
        ("/v1/./x?a=%2e%2e/../&b", "/v1/x", "a=%2e%2e/../&b", "/v1/x?a=%2e%2e/../&b"),
        ("/v1/x?", "/v1/x", "", "/v1/x?"),
        ("/v1/x?a?b", "/v1/x", "a?b", "/v1/x?a?b"),
        ("?a=1", "/", "a=1", "/?a=1"),
        ("/v1/%41?%41", "/v1/A", "%41", "/v1/A?%41"),
    ],
    ids=["query", "query-untouched", "empty-query-kept", "second-question-mark", "empty-path", "query-not-decoded"],
)
def test_query_passes_through(raw, path, query, target):
    result = canonicalize(raw)
    assert (result.path, result.query, result.target) == (path, query, target)
    assert canonicalize(result.target) == result


# An alphabet dense in the characters that matter, plus arbitrary text.
_INTERESTING = st.sampled_from(
    ["/", "/", ".", "..", "%", "%2e", "%2E", "%2f", "%5c", "%25", "%00", "%c0%ae", "%c3%a9", "%41", "%7e", ";", "?", "#",
     "\\", "\x00", "\n", " ", "a", "B", "2", "e", "f", "é", "\udcff", "~", "%3b", "%20", "%2"]
)
_PATHS = st.one_of(
    st.lists(_INTERESTING, max_size=16).map("".join),
    st.text(max_size=40),
    st.text(max_size=40).map(lambda s: "/" + s),
)


@given(_PATHS)
@example("/a/%25%32%65")
@example("/%7e%2e/")
def test_canonicalize_only_refuses_and_is_idempotent(raw):
    try:
        result = canonicalize(raw)
    except PathError as e:
        assert e.reason in paths.REASONS
        return
    assert canonicalize(result.target) == result
    p = result.path
    assert p.startswith("/")
    assert "//" not in p
    segments = p.split("/")
    assert "." not in segments and ".." not in segments
    assert not re.search(r"%(2[Ff]|5[Cc]|2[Ee]|[0-1][0-9A-Fa-f]|7[Ff]|25[0-9A-Fa-f]{2})", p)
    assert not re.search(r"%[0-9a-f][a-f]|%[a-f][0-9A-F]", p)  # upper-case hex only
    assert p.isascii() and p.isprintable()


_UNRESERVED = "abcXYZ019-._~"


@given(st.lists(st.text(alphabet=_UNRESERVED, min_size=1, max_size=6), min_size=1, max_size=5), st.data())
def test_encoding_unreserved_characters_changes_nothing(segments, data):
    # Percent-encoding any unreserved characters yields the same canonical path,
    # unless that hides a dot segment (then it is refused).
    plain = "/" + "/".join(segments)
    encoded = "".join(
        f"%{ord(c):02{'x' if data.draw(st.booleans()) else 'X'}}" if c != "/" and data.draw(st.booleans()) else c
        for c in plain
    )
    try:
        expected = canonicalize(plain)
    except PathError:
        return  # e.g. "/.." climbs above the root
    try:
        assert canonicalize(encoded) == expected
    except PathError as e:
        assert e.reason == reasons.PATH_ENCODED_DOT_SEGMENT


@given(_PATHS)
def test_encoded_slashes_idempotent_and_never_a_dot_segment(raw):
    try:
        result = canonicalize(raw, encoded_slashes=True)
    except PathError as e:
        assert e.reason in paths.REASONS
        return
    assert canonicalize(result.target, encoded_slashes=True) == result
    for segment in result.path.split("/"):
        assert "." not in segment.split("%2F") and ".." not in segment.split("%2F")
    assert not re.search(r"%2f|%5[Cc]", result.path)
