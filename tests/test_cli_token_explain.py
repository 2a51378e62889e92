"""`rr explain --token` with a minted token: the proxy's own token checks
(signature, revocation, expiry, parent and its generation: decide.minted_parent)
find the parent, and the explanation shows the token's narrowing and its
decision beside the parent's scopes."""

from __future__ import annotations

import re

import pytest

from rr_addon.testing.home import prepare_home, rr_cli

POLICY = """\
targets:
  - name: stripe
    hosts: ["api.stripe.com"]
    credentials: [{name: live, kind: bearer, secret: sk_test_x}]
  - name: github
    hosts: ["api.github.com"]
    credentials: [{name: gh, kind: bearer, secret: ghp_x}]
proxies:
  - name: billing
    targets: [{target: stripe}, {target: github}]
    credentials:
      - name: agent
        auth: api_key
        secret: caller-key-1
        rules: [{name: no-deletes, effect: deny, methods: [DELETE]}]
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return prepare_home(tmp_path_factory.mktemp("rr-token-explain"), POLICY)


def mint(home, *args) -> str:
    out = rr_cli(home, "token", "mint", "--proxy", "billing", "--credential", "agent", "--ttl", "1h", *args)
    return out.stdout.strip().splitlines()[-1]


class Explained:
    """The CLI result with its text flattened: rich wraps the tree to the terminal's width."""

    def __init__(self, result):
        self.exit_code = result.exit_code
        self.output = " ".join(re.sub(r"[│├└─]", " ", result.output).split())


def explain(home, token, method, url):
    return Explained(rr_cli(home, "explain", method, url, "--token", token, check=False))


def test_explain_shows_the_tokens_narrowing_and_its_decision(home):
    token = mint(home, "--target", "stripe", "--allow", "GET /v1/charges/*", "--max-requests", "5")
    inside = explain(home, token, "GET", "https://api.stripe.com/v1/charges/ch_1")
    assert inside.exit_code == 0, inside.output
    assert "child of billing/agent" in inside.output
    assert "targets stripe; allow GET /v1/charges/*; max requests 5" in inside.output
    assert "token narrowing inside it" in inside.output and "result allow" in inside.output
    path = explain(home, token, "GET", "https://api.stripe.com/v1/customers")
    assert path.exit_code == 2 and "token narrowing method and path not in the minted token's allow list" in path.output
    assert "403 access-denied" in path.output and "(token rule tok_" in path.output
    target = explain(home, token, "GET", "https://api.github.com/user")
    assert target.exit_code == 2 and "target not among the minted token's targets" in target.output
    # the parent's rules run first, and are reported
    parent = explain(home, mint(home), "DELETE", "https://api.stripe.com/v1/x")
    assert parent.exit_code == 2 and "no-deletes" in parent.output
    assert token not in inside.output + path.output  # the token is never echoed


def test_explain_refuses_a_token_the_proxy_would_refuse(home):
    token = mint(home)
    tid = rr_cli(home, "token", "list", "--json").stdout.split('"id": "')[-1].split('"')[0]
    head, body, sig = token.split(".")
    forged = explain(home, f"{head}.{body[:-1]}{'A' if body[-1] != 'A' else 'B'}.{sig}", "GET", "https://api.stripe.com/x")
    assert forged.exit_code == 1 and "minted token signature does not verify" in forged.output
    rr_cli(home, "token", "revoke", tid)
    revoked = explain(home, token, "GET", "https://api.stripe.com/x")
    assert revoked.exit_code == 1 and "minted token revoked" in revoked.output
    claims = Explained(rr_cli(home, "explain", "GET", "https://api.stripe.com/x", "--token", mint(home), "--claim", "role=admin", check=False))
    assert claims.exit_code == 1 and "carries the claims it was minted with" in claims.output
