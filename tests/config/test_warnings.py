"""Warnings (not errors) for configurations rr accepts but that do nothing.

"Does nothing" is measured against what rr does anyway: a request_count meter
without limits and without `when` counts what the per-credential usage counters
always count. A track-only meter that reads a value or counts a subset is on
purpose and gets no warning."""

from pathlib import Path

import pytest

from rr_addon.config.load import load_files
from rr_addon.config.validate import check, warnings

BASE = """
targets:
  - name: t
    hosts: [a.test]
    credentials: [{name: c, kind: none}]
proxies:
  - name: p
    targets: [{target: t}]
    credentials: [{name: k, auth: api_key, secret: x}]
"""


def warnings_of(tmp_path: Path, extra: str, base: str = BASE) -> list[str]:
    p = tmp_path / "policy.yaml"
    p.write_text(base + extra)
    config, source = load_files([p])
    assert check(config, source) == []
    return [str(w).replace(str(p), "F") for w in warnings(config, source)]


def test_a_complete_configuration_has_no_warnings(tmp_path):
    assert warnings_of(tmp_path, "") == []


@pytest.mark.parametrize(
    "meter",
    [
        pytest.param("{name: quota, limits: {minute: 60}}", id="limits"),
        pytest.param("{name: posts, when: {methods: [POST]}}", id="track-a-subset"),
        pytest.param("{name: tokens, type: response_value, response_value: {json_path: $.usage.total_tokens}}", id="track-a-value"),
        pytest.param("{name: blocked, limits: {day: 0}}", id="limit-zero-blocks"),
    ],
)
def test_meters_that_do_something(tmp_path, meter):
    assert warnings_of(tmp_path, f"    meters:\n      - {meter}\n") == []


def test_a_meter_with_only_a_name_does_nothing(tmp_path):
    (w,) = warnings_of(tmp_path, "    meters:\n      - name: requests\n")
    assert w.startswith("F:11: proxies[p].meters[requests]: counts every request without a limit, which the usage counters (`rr usage`) already do")
    assert "add limits: {minute|hour|day|month: N}" in w


def test_an_empty_when_is_no_condition(tmp_path):
    found = warnings_of(tmp_path, "    meters:\n      - {name: m, when: {}, limits: {minute: 5}}\n")
    assert found == ["F:11: proxies[p].meters[m].when: has no condition and matches every request; omit it or add one of methods, path, headers, query, body, claims, mcp"]


@pytest.mark.parametrize("effect, what", [("deny", "denies every request"), ("allow", "allows every request its deny rules do not match")])
def test_a_rule_without_a_condition(tmp_path, effect, what):
    (w,) = warnings_of(tmp_path, f"    rules:\n      - {{name: everything, effect: {effect}, ignore_case: true}}\n")
    assert w == (
        f"F:11: proxies[p].rules[everything]: has no condition, so it matches every request: the scope {what} and its "
        f"default_effect never applies; add one of methods, path, headers, query, body, claims, mcp, or drop the rule and set default_effect: {effect}"
    )


def test_an_mcp_condition_is_a_condition(tmp_path):
    assert warnings_of(tmp_path, "    rules:\n      - {name: no-delete, effect: deny, mcp: {tool: \"^delete_\"}}\n") == []


def test_rules_of_every_scope_are_checked(tmp_path):
    base = BASE.replace("{name: c, kind: none}", "{name: c, kind: none, rules: [{name: r1, effect: allow}]}").replace(
        "secret: x}", "secret: x, rules: [{name: r2, effect: deny}]}"
    )
    found = warnings_of(tmp_path, "", base)
    assert [w.split(": has no condition")[0] for w in found] == ["F:5: targets[t].credentials[c].rules[r1]", "F:9: proxies[p].credentials[k].rules[r2]"]


def test_objects_that_no_request_can_use(tmp_path):
    text = "targets:\n  - {name: lonely, hosts: [b.test]}\nproxies:\n  - name: nobody\n"
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    config, source = load_files([p])
    found = [str(w).replace(str(p), "F") for w in warnings(config, source)]
    assert found == [
        "F:2: targets[lonely]: no proxy lists this target, so no request can reach it; add it to a proxy's targets",
        "F:4: proxies[nobody].targets: the proxy has no targets: every request is refused with 403 unknown-target",
        "F:4: proxies[nobody].credentials: the proxy has no credentials: no caller can authenticate to it",
    ]


def test_a_limited_cost_meter_without_reserve_warns_of_concurrent_overrun(tmp_path):
    cost = "cost: {model: $.model, prices: {m: {input: 1, output: 1}}, input: $.i, output: $.o}"
    (w,) = warnings_of(tmp_path, f"    meters:\n      - {{name: spend, type: cost, {cost}, limits: {{month: 5}}}}\n")
    assert w.startswith("F:11: proxies[p].meters[spend]: a cost meter without reserve admits every request while the total is under the limit")
    assert warnings_of(tmp_path, f"    meters:\n      - {{name: spend, type: cost, {cost}, limits: {{month: 5}}, reserve: {{default: 100}}}}\n") == []
    assert warnings_of(tmp_path, f"    meters:\n      - {{name: spend, type: cost, {cost}}}\n") == []  # tracking only
