import copy
import json

import pytest
from hypothesis import given, settings, strategies as st
from jsonpath_ng.ext import parse as jsonpath_ng_parse

from rr_addon.policy.bodies import MAX_DEPTH, JsonTooDeep, dump_json, parse_json
from rr_addon.policy.jsonpaths import JsonPathError, compile_matcher, compile_path, destroy, find, retain

DOC = {
    "object": "list",
    "data": [
        {"id": 1, "name": "a", "price": 5, "tags": ["x", "y"], "card": {"last4": "4242", "brand": "visa"}, "ok": True},
        {"id": 2, "name": "b", "price": 15, "tags": [], "card": {"last4": "1111"}, "ok": False},
        {"id": 3, "name": "c", "price": 25, "tags": ["z"], "nested": {"card": {"last4": "0000"}}, "ok": None},
    ],
    "meta": {"count": 3, "next": None, "ids": [1, 2, 3], "grid": [[1, 2], [3, 4]]},
    "ключ": {"日本": "значение"},
    "has_more": False,
}


def values(doc, text):
    return find(doc, compile_path(text))


def canon(items):
    return sorted(json.dumps(v, sort_keys=True) for v in items)


# Paths whose results must equal jsonpath-ng's own `find` (as multisets).
SAME_AS_JSONPATH_NG = [
    "$",
    "$.object",
    "object",
    "$.data[*].id",
    "$.data[0]",
    "$.data[-1].name",
    "$.data[0,2].id",
    "$.data[1:]",
    "$.data[:2].id",
    "$.data[::2].id",
    "$.data[::-1].id",
    "$.data[*].tags[*]",
    "$.data[*].card.last4",
    "$.*",
    "$.meta.*",
    "$['object', 'has_more']",
    '$["ключ"]["日本"]',
    "$..card",
    "$..last4",
    "$..card.last4",
    "$..[0]",
    "$..*",
    "$.data..last4",
    "$.meta.grid[*][1]",
    "$.data[?(@.price > 10)].id",
    "$.data[?(@.price >= 15 && @.price < 25)].id",
    "$.data[?(@.price < 10 || @.price > 20)].id",
    "$.data[?(@.name == 'b')].id",
    "$.data[?(@.name != 'b')].id",
    "$.data[?(@.ok == true)].id",
    "$.data[?(@.ok == false)].id",
    "$.data[?(@.ok == null)].id",
    "$.data[?(@.card)].id",
    "$.data[?(!@.card)].id",
    "$.data[?(@.card.brand)].id",
    "$.data[?(@.tags[0] == 'z')].id",
    "$.data[?(@.id == $.meta.count)].name",
    "$.data[?(@.missing != 1)].id",
    "$.meta.ids[?(@ > 1)]",
    "$..[?(@.last4 == '0000')]",
    "$.missing",
    "$.data[7]",
    "$.object.deeper",
    "$.data.id",
    "$.meta[0]",
]


@pytest.mark.parametrize("text", SAME_AS_JSONPATH_NG)
def test_same_results_as_jsonpath_ng(text):
    expected = {str(m.full_path): m.value for m in jsonpath_ng_parse(text).find(DOC)}.values()
    assert canon(values(DOC, text)) == canon(expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("$.data[?(@.price == 15.0)].id", [2], id="int-equals-float-literal"),
        pytest.param("$.v[?(@ == 0.1)]", ["0.1"], id="exact-decimal"),
        pytest.param("$.v[?(@ > 0.1)]", ["0.10000000000000001", "1e400"], id="beyond-float-precision"),
        pytest.param("$.v[?(@ == 1)]", [], id="true-is-not-1"),
        pytest.param("$.v[?(@ == true)]", [True], id="true"),
        pytest.param("$.v[?(@ =~ '^ab+c$')]", ["abbc"], id="re2-regex"),
        pytest.param("$.v[?(@ == 'abbc')]", ["abbc"], id="string"),
        pytest.param("$.v[?(@ > 'b')]", [], id="string-order"),
        pytest.param("$.v[?(@ < 'b')]", ["abbc"], id="string-order-lt"),
    ],
)
def test_filter_comparisons_are_exact(text, expected):
    doc = parse_json('{"data": [{"id": 1, "price": 5}, {"id": 2, "price": 15}], "v": [0.1, 0.10000000000000001, 1e400, true, "abbc"]}')
    got = [v.text if hasattr(v, "text") else v for v in values(doc, text)]
    assert got == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("$.* where b", [{"b": 1}], id="where"),
        pytest.param("$.* wherenot b", [{"d": 2}], id="wherenot"),
        pytest.param("$.a.b.`parent`", [{"b": 1}], id="parent"),
    ],
)
def test_constructs_left_to_jsonpath_ng(text, expected):
    path = compile_path(text)
    assert path.fallback is not None
    assert values({"a": {"b": 1}, "c": {"d": 2}}, text) == expected


def test_fallback_paths_filter_too():
    doc = {"a": {"b": 1}, "c": {"d": 2}}
    assert destroy(copy.deepcopy(doc), [compile_path("$.* where b")]) == {"c": {"d": 2}}
    assert retain(doc, [compile_path("$.* where b")]) == {"a": {"b": 1}}
    assert destroy(copy.deepcopy(doc), [compile_path("$.a.b.`parent`")]) == {"c": {"d": 2}}


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("   ", "empty", id="blank"),
        pytest.param("$.[", "not a valid JSONPath", id="syntax"),
        pytest.param("$.data[?(@.x == foo)]", "deprecated", id="unquoted-word"),
        pytest.param("$.a | $.b", "deprecated", id="union-operator"),
        pytest.param("$.a.`len`", "computes a value", id="len"),
        pytest.param("$.a.`keys`", "computes a value", id="keys"),
        pytest.param("$.a[/b]", "computes a value", id="sorted"),
        pytest.param("$.a[?(@.x + 1 > 2)]", "computes a value", id="arithmetic"),
        pytest.param("$.a[?(@.x =~ '(?=y)')]", "RE2", id="regex-lookahead"),
    ],
)
def test_compile_errors(text, message):
    with pytest.raises(JsonPathError, match=message):
        compile_path(text)


def test_compile_is_cached():
    assert compile_path("$.data[*].id") is compile_path("$.data[*].id")


# --------------------------------------------------------------------------
# retain / destroy


def run(op, doc, *paths):
    fn = retain if op == "retain" else destroy
    return fn(copy.deepcopy(doc), [compile_path(p) for p in paths])


@pytest.mark.parametrize(
    "doc, paths, expected",
    [
        pytest.param({"data": [{"id": 1, "x": 2}, {"x": 3}, {"id": 4}]}, ["$.data[*].id"], {"data": [{"id": 1}, {"id": 4}]}, id="wildcard-field-drops-elements-without-it"),
        pytest.param({"data": [{"id": 1}, {"id": 2}]}, ["$.data[0]"], {"data": [{"id": 1}]}, id="index-keeps-one-element-list"),
        pytest.param({"data": [1, 2, 3, 4]}, ["$.data[-1]", "$.data[0]"], {"data": [1, 4]}, id="indices-keep-document-order"),
        pytest.param({"data": [1, 2, 3, 4]}, ["$.data[1:3]"], {"data": [2, 3]}, id="slice"),
        pytest.param({"data": [1, 2], "x": 1}, ["$.data[0]", "$.data[-2]"], {"data": [1]}, id="same-element-twice"),
        pytest.param({"b": 1, "a": 2, "c": 3}, ["$.c", "$.b"], {"b": 1, "c": 3}, id="key-order-of-document"),
        pytest.param({"a": {"b": {"c": 1, "d": 2}, "e": 3}}, ["$.a.b.c"], {"a": {"b": {"c": 1}}}, id="ancestors-only"),
        pytest.param({"a": {"b": 1, "c": 2}}, ["$.a", "$.a.b"], {"a": {"b": 1, "c": 2}}, id="ancestor-and-descendant"),
        pytest.param({"g": [[1, {"k": 2, "j": 3}], [4]]}, ["$.g[*][1].k"], {"g": [[{"k": 2}]]}, id="nested-arrays"),
        pytest.param({"a": {"card": 1, "x": {"card": 2, "y": 3}}, "card": 4}, ["$..card"], {"a": {"card": 1, "x": {"card": 2}}, "card": 4}, id="recursive-descent"),
        pytest.param({"a": [{"b": {"c": 1}}, {"c": 2}]}, ["$..c"], {"a": [{"b": {"c": 1}}, {"c": 2}]}, id="recursive-through-arrays"),
        pytest.param({"ключ": {"日本": 1, "x": 2}, "é": 3}, ['$["ключ"]["日本"]'], {"ключ": {"日本": 1}}, id="unicode-keys"),
        pytest.param({"a": 1}, ["$.b"], {}, id="no-match-object-root"),
        pytest.param([{"a": 1}], ["$[*].b"], [], id="no-match-array-root"),
        pytest.param("scalar", ["$.a"], None, id="no-match-scalar-root"),
        pytest.param({"a": 1}, ["$"], {"a": 1}, id="root-keeps-all"),
        pytest.param({"a": [{"p": 5}, {"p": 15}]}, ["$.a[?(@.p > 10)]"], {"a": [{"p": 15}]}, id="filter"),
        pytest.param({"a": {"x": {"p": 5}, "y": {"p": 15}}}, ["$.a[?(@.p > 10)]"], {"a": {"y": {"p": 15}}}, id="filter-on-object-members"),
        pytest.param({"a": {"b": None, "c": 0}}, ["$.a.b"], {"a": {"b": None}}, id="null-is-kept"),
    ],
)
def test_retain(doc, paths, expected):
    assert run("retain", doc, *paths) == expected


@pytest.mark.parametrize(
    "doc, paths, expected",
    [
        pytest.param({"data": [{"id": 1, "card": 2}, {"card": 3}]}, ["$.data[*].card"], {"data": [{"id": 1}, {}]}, id="wildcard-field"),
        pytest.param({"data": [1, 2, 3, 4]}, ["$.data[1]"], {"data": [1, 3, 4]}, id="element-without-hole"),
        pytest.param({"data": [1, 2, 3, 4]}, ["$.data[0]", "$.data[1]"], {"data": [3, 4]}, id="indices-of-the-input"),
        pytest.param({"data": [1, 2, 3, 4]}, ["$.data[-1]", "$.data[3]"], {"data": [1, 2, 3]}, id="same-element-twice"),
        pytest.param({"data": [1, 2, 3, 4]}, ["$.data[::2]"], {"data": [2, 4]}, id="slice"),
        pytest.param({"data": [1, 2]}, ["$.data[*]"], {"data": []}, id="all-elements"),
        pytest.param({"data": [1, 2]}, ["$.data[5]"], {"data": [1, 2]}, id="index-out-of-range"),
        pytest.param({"g": [[1, 2], [3, [4, 5]]]}, ["$.g[*][0]", "$.g[1][1][1]"], {"g": [[2], [[4]]]}, id="nested-arrays"),
        pytest.param({"a": {"card": 1, "x": {"card": 2, "y": 3}}, "card": 4}, ["$..card"], {"a": {"x": {"y": 3}}}, id="recursive-descent"),
        pytest.param({"a": [{"c": 1}, {"b": [{"c": 2}, 3]}]}, ["$..c"], {"a": [{}, {"b": [{}, 3]}]}, id="recursive-through-arrays"),
        pytest.param({"a": {"a": {"a": 1}}}, ["$..a"], {}, id="recursive-nested-same-name"),
        pytest.param({"a": [1, [2, 3]]}, ["$..[0]"], {"a": [[3]]}, id="recursive-index"),
        pytest.param({"a": 1, "b": {"c": 2}}, ["$..*"], {}, id="recursive-wildcard"),
        pytest.param({"ключ": {"日本": 1, "x": 2}}, ['$["ключ"]["日本"]'], {"ключ": {"x": 2}}, id="unicode-keys"),
        pytest.param({"a": 1}, ["$.b", "$.a.c", "$[0]"], {"a": 1}, id="nothing-matches"),
        pytest.param({"a": [{"p": 5}, {"p": 15}, {"p": 25}]}, ["$.a[?(@.p > 10)]"], {"a": [{"p": 5}]}, id="filter"),
        pytest.param({"a": {"b": 1}, "c": 2}, ["$.a", "$.a.b"], {"c": 2}, id="ancestor-and-descendant"),
        pytest.param({"a": 1}, ["$"], None, id="root"),
        pytest.param([{"a": 1, "b": 2}], ["$[0].a"], [{"b": 2}], id="array-root"),
    ],
)
def test_destroy(doc, paths, expected):
    assert run("destroy", doc, *paths) == expected


def test_destroy_is_in_place_and_retain_shares_subtrees():
    doc = {"a": {"b": [1, 2]}, "c": 1}
    assert destroy(doc, [compile_path("$.c")]) is doc and doc == {"a": {"b": [1, 2]}}
    kept = retain(doc, [compile_path("$.a.b")])
    assert kept["a"]["b"] is doc["a"]["b"]


def test_exact_numbers_survive_filtering():
    doc = parse_json('{"a": [1e400, 0.10, 12345678901234567890123], "b": 1}')
    assert dump_json(destroy(doc, [compile_path("$.b")])) == b'{"a":[1e400,0.10,12345678901234567890123]}'


def test_matcher_combines_paths():
    m = compile_matcher([compile_path("$.a"), compile_path("$.a.b"), compile_path("$..c")])
    assert canon(find({"a": {"b": 1}, "x": {"c": 2}}, m)) == canon([{"b": 1}, 1, 2])


def _deep(depth: int) -> dict:
    doc: dict = {"leaf": 1}
    for _ in range(depth):
        doc = {"a": doc}
    return doc


@pytest.mark.parametrize("op", ["retain", "destroy", "find"])
def test_too_deep_for_recursive_descent(op):
    doc = _deep(MAX_DEPTH + 5)
    path = compile_path("$..leaf")
    with pytest.raises(JsonTooDeep):
        {"retain": retain, "destroy": destroy, "find": lambda d, p: find(d, p[0])}[op](doc, [path])


def test_deep_but_allowed():
    assert find(_deep(MAX_DEPTH - 2), compile_path("$..leaf")) == [1]


# --------------------------------------------------------------------------
# Properties

keys = st.sampled_from(["a", "b", "c"])
documents = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["x", "y"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=25,
)
NAME_SEGMENTS = [".a", ".b", ".c", ".*", "[*]", "..a", "..b", "..*"]
ANY_SEGMENTS = NAME_SEGMENTS + ["[0]", "[-1]", "[1:]", "[?(@.a)]", "[?(@ > 0)]", "..[0]"]
name_paths = st.lists(st.sampled_from(NAME_SEGMENTS), min_size=1, max_size=3).map(lambda segs: "$" + "".join(segs))
any_paths = st.lists(st.sampled_from(ANY_SEGMENTS), min_size=1, max_size=3).map(lambda segs: "$" + "".join(segs))


def is_subdocument(out, inp) -> bool:
    """`out` can be obtained from `inp` by dropping members and array elements."""
    if type(out) is dict:
        if type(inp) is not dict or not all(k in inp and is_subdocument(v, inp[k]) for k, v in out.items()):
            return False
        order = [k for k in inp if k in out]
        return order == list(out)
    if type(out) is list:
        if type(inp) is not list:
            return False
        i = 0
        for item in out:  # greedy embedding as a subsequence
            while i < len(inp) and not is_subdocument(item, inp[i]):
                i += 1
            if i == len(inp):
                return False
            i += 1
        return True
    return type(out) is type(inp) and out == inp


@settings(max_examples=200, deadline=None)
@given(documents, st.lists(name_paths, min_size=1, max_size=3))
def test_destroyed_paths_are_gone(doc, texts):
    paths = [compile_path(t) for t in texts]
    out = destroy(copy.deepcopy(doc), paths)
    for p in paths:
        assert find(out, p) == [], p.text


@settings(max_examples=200, deadline=None)
@given(documents, st.lists(any_paths, min_size=1, max_size=3))
def test_destroyed_containers_are_gone(doc, texts):
    paths = [compile_path(t) for t in texts]
    doc = copy.deepcopy(doc)
    doomed = {id(v) for p in paths for v in find(doc, p) if type(v) in (dict, list)}
    out = destroy(doc, paths)

    def ids(node):
        yield id(node)
        for v in node.values() if type(node) is dict else node if type(node) is list else ():
            yield from ids(v)

    assert doomed.isdisjoint(ids(out))


@settings(max_examples=200, deadline=None)
@given(documents, st.lists(any_paths, min_size=1, max_size=3))
def test_retain_gives_a_subdocument(doc, texts):
    out = retain(doc, [compile_path(t) for t in texts])
    if out is not None:
        assert is_subdocument(out, doc)


@settings(max_examples=200, deadline=None)
@given(documents, st.lists(name_paths, min_size=1, max_size=3))
def test_retain_keeps_every_match(doc, texts):
    paths = [compile_path(t) for t in texts]
    out = retain(doc, paths)
    for p in paths:
        assert canon(find(out, p)) == canon(find(doc, p)), p.text


@settings(max_examples=200, deadline=None)
@given(documents, any_paths)
def test_same_results_as_jsonpath_ng_property(doc, text):
    # jsonpath-ng may return a node twice ($..b..a with nested b's); we return each node once
    expected = {str(m.full_path): m.value for m in jsonpath_ng_parse(text).find(doc)}
    assert canon(values(doc, text)) == canon(expected.values())
