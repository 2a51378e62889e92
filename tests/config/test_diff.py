"""The plan's field-by-field differences (rr_addon.config.diff): named entries
compared by name, whole values otherwise, long values shortened to the part that
differs, secrets never shown."""

import pytest

from rr_addon.config.diff import diff


@pytest.mark.parametrize(
    "old, new, expected",
    [
        pytest.param({"a": 1}, {"a": 1}, [], id="equal"),
        pytest.param({"limits": {"minute": 30}}, {"limits": {"minute": 20}}, ["limits.minute: 30 → 20"], id="nested"),
        pytest.param({"x": 1}, {}, ["x: removed (was 1)"], id="removed"),
        pytest.param({}, {"x": "on"}, ['x: added "on"'], id="added"),
        pytest.param(
            {"rules": [{"name": "a", "effect": "allow"}, {"name": "b", "effect": "deny"}]},
            {"rules": [{"name": "b", "effect": "allow"}, {"name": "c", "effect": "deny"}]},
            ['rules[a]: removed (was {"name": "a", "effect": "allow"})', 'rules[b].effect: "deny" → "allow"', 'rules[c]: added {"name": "c", "effect": "deny"}'],
            id="named-entries",
        ),
        pytest.param({"rules": [{"name": "a"}, {"name": "b"}]}, {"rules": [{"name": "b"}, {"name": "a"}]}, ['rules (order): ["a", "b"] → ["b", "a"]'], id="order"),
        pytest.param({"hosts": ["a.test"]}, {"hosts": ["a.test", "b.test"]}, ['hosts: ["a.test"] → ["a.test", "b.test"]'], id="unnamed-list"),
        pytest.param({"client_secret": "s1"}, {"client_secret": "s2"}, ["client_secret: changed (value not shown)"], id="secret"),
        pytest.param({}, {"secret": "s2"}, ["secret: changed (value not shown)"], id="secret-added"),
        pytest.param(
            {"description": "a" * 80 + "OLD" + "z" * 80},
            {"description": "a" * 80 + "NEW" + "z" * 80},
            ['description: …aaaaaaaaaaaaOLDzzzzzzzzzzzz… → …aaaaaaaaaaaaNEWzzzzzzzzzzzz…'],
            id="long-value",
        ),
    ],
)
def test_diff(old, new, expected):
    assert [str(c) for c in diff(old, new)] == expected


def test_a_long_difference_is_cut():
    (change,) = diff({"d": "x" * 10}, {"d": "y" * 300})
    assert "(+" in str(change) and len(str(change)) < 200
