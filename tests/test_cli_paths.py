"""`rr apply` warns about path patterns that do not mean what they look like, with
the rewrite; `rr explain` says which path form matched (issue 14)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rr_addon.cli import app

POLICY = """\
targets:
  - name: stripe
    hosts: ["api.stripe.com"]
    credentials:
      - {name: live, kind: bearer, secret: sk_test_x}
proxies:
  - name: billing
    default_effect: deny
    targets: [{target: stripe}]
    credentials:
      - {name: agent, auth: api_key, secret: caller-key-1}
    rules:
      - name: charges
        effect: allow
        path: "/v1/charges*"
      - name: customers
        effect: allow
        methods: [GET]
        path: /v1/customers
      - name: refunds
        effect: deny
        path: {glob: "/v1/charges/*/refunds"}
      - name: balance
        effect: allow
        path: {prefix: /v1/balance}
    meters:
      - name: calls
        when: {path: "^/v1/"}
        limits: {day: 1000}
"""


@pytest.fixture
def home(make_home):
    return make_home(init=False, width=None, env={"COLUMNS": "400"})


def rr(*args):
    return CliRunner().invoke(app, list(args))


def test_apply_warns_with_the_fix_and_still_applies(home):
    assert rr("init").exit_code == 0
    (home / "policy.yaml").write_text(POLICY)
    r = rr("apply", "-f", str(home / "policy.yaml"))
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())  # rich wraps long lines
    where = str(home / "policy.yaml") + ":15: "
    assert where in out
    assert "proxies[billing].rules[charges].path: path '/v1/charges*' looks like a glob but is an RE2 search" in out
    assert "Write `path: {glob: '/v1/charges*'}`" in out and "`path: {prefix: '/v1/charges'}`" in out
    assert "proxies[billing].rules[customers].path: allow rule path '/v1/customers' is an unanchored RE2 search" in out
    assert "e.g. '/x/v1/customers'" in out
    assert out.count("warning:") == 2, out
    # The explicit forms, the deny rule and the anchored meter pattern draw no warning.
    assert "rules[refunds]" not in out and "rules[balance]" not in out and "meters[calls]" not in out
    assert "applied" in out


def test_explain_names_the_path_form(home):
    rr("init")
    (home / "policy.yaml").write_text(POLICY)
    rr("apply", "-f", str(home / "policy.yaml"))
    r = rr("explain", "POST", "https://api.stripe.com/v1/charges/ch_1/refunds", "--credential", "billing/agent")
    out = " ".join(r.output.replace("│", " ").split())  # rich wraps long lines under the tree's rule
    assert r.exit_code == 2, r.output
    assert "refunds deny p500 matched; path glob '/v1/charges/*/refunds' matched" in out
    assert "charges allow p500 matched; path regex search '/v1/charges*' matched" in out
    assert "balance allow p500 path did not match; path prefix '/v1/balance' did not match" in out
