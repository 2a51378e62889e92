"""Path forms (issue 14): prefix, glob and full-match regex read the way they
look; the original `pattern` stays an RE2 search. All forms compile into the
scope's one RE2 set, so they are checked through ScopeRules, meters' `when`
and `validate:` alike."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rr_addon.policy.filters_schema import ValidateEntry
from rr_addon.policy.rules_schema import Match, Rule
from rr_addon.core.rules import RuleRequest, ScopeRules, compile_when
from rr_addon.policy.validation import compile_check

# (path condition, paths it matches, paths it does not)
CASES = [
    ({"prefix": "/v1/charges"}, ["/v1/charges", "/v1/charges/", "/v1/charges/ch_1/capture"], ["/v1/charge", "/v1/chargesbacks/delete", "/x/v1/charges", "/V1/charges"]),
    ({"prefix": "/v1/charges/"}, ["/v1/charges/", "/v1/charges/ch_1"], ["/v1/charges", "/v1/chargesbacks"]),
    ({"prefix": "/"}, ["/", "/anything/at/all"], []),
    ({"glob": "/v1/charges/*"}, ["/v1/charges/ch_1", "/v1/charges/"], ["/v1/charges", "/v1/charges/ch_1/refunds", "/x/v1/charges/ch_1"]),
    ({"glob": "/v1/charges*"}, ["/v1/charges", "/v1/chargesbacks"], ["/v1/charge", "/x/v1/charges", "/v1/charges/ch_1"]),
    ({"glob": "/repos/**"}, ["/repos/", "/repos/o/r/pulls/1"], ["/repos", "/x/repos/o"]),
    ({"glob": "/repos/*/*/pulls"}, ["/repos/o/r/pulls"], ["/repos/o/r/x/pulls", "/repos/o/r/pulls/1"]),
    ({"glob": "/v1/**/refunds"}, ["/v1/charges/ch_1/refunds", "/v1//refunds"], ["/v1/refunds", "/v1/charges/ch_1/refunds/x"]),
    ({"glob": "/files/a.b"}, ["/files/a.b"], ["/files/aXb"]),  # `.` is literal in a glob
    ({"regex": "/v1/charges/ch_[0-9]+"}, ["/v1/charges/ch_12"], ["/v1/charges/ch_12/refunds", "/x/v1/charges/ch_12", "/v1/charges/ch_"]),
    ({"regex": "/a|/b"}, ["/a", "/b"], ["/ab", "/a/b", "/xb"]),  # the whole alternation is anchored
    # The original form: a search, so the trap issue 14 describes is still what it says.
    ("/v1/charges*", ["/v1/charge", "/x/v1/charges", "/v1/chargesbacks/delete"], ["/v1/charg"]),
    ({"pattern": "^/v1/charges/"}, ["/v1/charges/x"], ["/x/v1/charges/x"]),
]
IDS = [str(c[0]) for c in CASES]


def _req(path: str) -> RuleRequest:
    return RuleRequest("GET", path)


@pytest.mark.parametrize("condition, matches, misses", CASES, ids=IDS)
def test_rules_meters_and_validation_read_a_path_form_alike(condition, matches, misses):
    # Many rules in one scope, so the form is checked inside the shared RE2 set.
    others = [Rule(name=f"other-{i}", effect="allow", path={"prefix": f"/other/{i}"}) for i in range(20)]
    scope = ScopeRules.compile("proxy", [*others, Rule(name="r", effect="allow", path=condition)], "deny")
    when = compile_when(Match(path=condition))
    check = compile_check(ValidateEntry(path=condition, max_body_bytes=1))
    for path in matches:
        assert scope.evaluate(_req(path)).rule == "r", path
        assert when.evaluate(_req(path)).allowed, path
        assert check.applies("GET", path), path
    for path in misses:
        assert scope.evaluate(_req(path)).rule is None, path
        assert not when.evaluate(_req(path)).allowed, path
        assert not check.applies("GET", path), path


def test_presence_absent_and_ignore_case_apply_to_every_form():
    scope = ScopeRules.compile(
        "proxy",
        [
            Rule(name="outside", effect="deny", path={"prefix": "/v1/", "presence": "absent"}),
            Rule(name="ci", effect="allow", ignore_case=True, path={"glob": "/v1/charges/*"}),
        ],
        "deny",
    )
    assert scope.evaluate(_req("/admin")).rule == "outside"
    assert scope.evaluate(_req("/V1/CHARGES/ch_1")).rule == "outside"  # the prefix is case-sensitive
    assert scope.evaluate(_req("/v1/CHARGES/ch_1")).rule == "ci"


@pytest.mark.parametrize(
    "condition, loc, message",
    [
        ({"prefix": "/a", "glob": "/a/*"}, ("path",), "a path needs exactly one of 'prefix', 'glob', 'regex' or 'pattern' (got prefix, glob)"),
        ({"presence": "absent"}, ("path",), "a path needs exactly one of 'prefix', 'glob', 'regex' or 'pattern'"),
        ({"prefix": "v1/charges"}, ("path", "prefix"), "a path prefix starts with '/' (paths are matched without scheme and host): 'v1/charges'"),
        ({"glob": "/v1//charges/*"}, ("path", "glob"), "glob '/v1//charges/*' would never match: rules see the canonical path, so write '/v1/charges/*'"),
        ({"prefix": "/caf\u00e9"}, ("path", "prefix"), "prefix '/caf\u00e9' would never match: rules see the canonical path, so write '/caf%C3%A9'"),
        ({"glob": "/v1/x?a=1"}, ("path", "glob"), "glob '/v1/x?a=1': paths are matched without the query string; match it with 'query'"),
        ({"regex": "/a(?=b)"}, ("path", "regex"), "not a valid RE2 regex: invalid perl operator: (?= (RE2 has no look-around)"),
        ({"prefix": "/a", "flavour": "x"}, ("path", "flavour"), None),
    ],
)
def test_bad_path_conditions_are_refused_with_the_fix(condition, loc, message):
    with pytest.raises(ValidationError) as info:
        Rule.model_validate({"name": "r", "effect": "allow", "path": condition})
    (error,) = info.value.errors()
    assert tuple(error["loc"]) == loc
    if message is not None:
        assert error["msg"].removeprefix("Value error, ") == message
