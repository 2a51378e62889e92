"""Which original-form path patterns `rr apply` warns about, and the rewrite it offers."""

from __future__ import annotations

import pytest

from rr_addon.config.path_warnings import looks_like_glob, path_message
from rr_addon.policy.paths_schema import PathSpec


@pytest.mark.parametrize(
    "pattern, glob",
    [
        ("/v1/charges*", True),
        ("/v1/*/refunds", True),
        ("/files/*.json", True),  # `.` is common in paths: not taken as regex syntax
        ("v1_*", True),
        ("^/v1/charges/.*", False),  # `.*` is regex
        ("/v1/(charges|refunds)*", False),
        ("^/v1/charges*", False),  # anchored: someone who writes `^` means a regex
        ("/v1/charges", False),
        ("/v1/[a-z]*", False),
    ],
)
def test_looks_like_glob(pattern, glob):
    assert looks_like_glob(pattern) is glob


@pytest.mark.parametrize(
    "path, allow, expected",
    [
        ("/v1/charges*", False, "path '/v1/charges*' looks like a glob but is an RE2 search: it matches anywhere in the path and `*` repeats the character before it (so it also matches e.g. '/x/v1/charge'). Write `path: {glob: '/v1/charges*'}` (`*` within a segment, `**` across) or `path: {prefix: '/v1/charges'}` (that path and everything below it); write `{pattern: …}` only if you mean the regex."),
        ("/v1/*/refunds", True, "path '/v1/*/refunds' looks like a glob but is an RE2 search: it matches anywhere in the path and `*` repeats the character before it (so it also matches e.g. '/x/v1/refunds'). Write `path: {glob: '/v1/*/refunds'}` (`*` within a segment, `**` across); write `{pattern: …}` only if you mean the regex."),
        ("/v1/customers", True, "allow rule path '/v1/customers' is an unanchored RE2 search: it allows every path that merely contains a match, e.g. '/x/v1/customers'. Write `path: {prefix: '/v1/customers'}` or `path: {regex: '/v1/customers'}` (a full match), or anchor the pattern with '^'."),
        ("/v1/[a-z]+", True, "allow rule path '/v1/[a-z]+' is an unanchored RE2 search: it allows every path that merely contains a match. Write `path: {regex: '/v1/[a-z]+'}` (a full match), or anchor the pattern with '^'."),
        ("charges", True, "allow rule path 'charges' is an unanchored RE2 search: it allows every path that merely contains a match. Write a `regex` (a full match) starting with '/', or anchor the pattern with '^'."),
        ("/v1/customers", False, None),  # a deny rule or meter that matches more is not a hole
        ("^/v1/customers", True, None),
        ("(?i)^/v1/customers", True, None),
    ],
)
def test_messages(path, allow, expected):
    assert path_message(PathSpec.model_validate(path), allow) == expected


@pytest.mark.parametrize("form", [{"prefix": "/v1"}, {"glob": "/v1/*"}, {"regex": "/v1/.*"}])
def test_explicit_forms_never_warn(form):
    assert path_message(PathSpec.model_validate(form), True) is None
