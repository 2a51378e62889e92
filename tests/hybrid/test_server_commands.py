"""`rr token`, `rr secret status`, `rr explain` and `rr usage reset` with
`--server URL --admin FILE`: an operator without database access gets what the
same command says on the control plane (a control plane served in-process)."""

from __future__ import annotations

import json

import pytest

from rr_addon.store import minted
from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.hybrid import served_control_plane

POLICY = """
targets:
  - name: api
    hosts: [api.example.com]
    credentials: [{name: live, kind: bearer, secret: sk_server_cmds_71ab}]
    rules: [{name: no-deletes, effect: deny, methods: [DELETE]}]
proxies:
  - name: agent
    targets: [{target: api}]
    credentials: [{name: a, auth: api_key, secret: caller-key-server-cmds}]
"""


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    home = prepare_home(tmp_path_factory.mktemp("cp"), POLICY)
    with served_control_plane(home) as (url, engine, admin):
        yield home, url, engine, admin, tmp_path_factory.mktemp("operator")


def remote(cp, *args: str, check: bool = True):
    home, url, _, admin, work = cp
    return rr_cli(work, *args, "--server", url, "--admin", str(admin), env={"RR_DATABASE_URL": ""}, check=check)


def test_token_mint_list_revoke_through_the_control_plane(cp):
    home, url, engine, _, work = cp
    r = remote(cp, "token", "mint", "--proxy", "agent", "--credential", "a", "--ttl", "1h", "--allow", "GET /v1*", "--note", "remote")
    token = r.stdout.strip()
    assert token and "\n" not in token
    (row,) = [t for t in minted.listing(engine) if t["note"] == "remote"]  # recorded in the control plane's database
    assert f"minted {row['id']} for agent/a" in r.stderr

    listed = json.loads(remote(cp, "token", "list", "--json").stdout)
    assert [t for t in listed if t["id"] == row["id"]] == [row]

    # the token is one the control plane's configuration accepts: explain finds it as the proxy would
    out = remote(cp, "explain", "GET", "https://api.example.com/v1/x", "--token", token).output
    assert f"minted token {row['id']}, a child of agent/a" in out

    assert f"{row['id']}: revoked" in remote(cp, "token", "revoke", row["id"]).output
    assert [t["state"] for t in minted.listing(engine) if t["id"] == row["id"]] == ["revoked"]
    unknown = remote(cp, "token", "revoke", "tok_nope", check=False)
    assert unknown.exit_code == 1 and "no minted token 'tok_nope'" in unknown.output

    refused = remote(cp, "token", "mint", "--proxy", "nope", "--credential", "a", "--ttl", "1h", check=False)
    assert refused.exit_code == 1 and "no proxy 'nope'" in refused.output
    assert not (work / "rr.db").exists()


def test_explain_through_the_control_plane_says_what_it_says_there(cp):
    home = cp[0]
    for method, code in (("GET", 0), ("DELETE", 2)):
        args = ("explain", method, "https://api.example.com/v1/charges", "--credential", "agent/a")
        here = rr_cli(home, *args, check=False)
        there = remote(cp, *args, check=False)
        assert (here.exit_code, there.exit_code) == (code, code), there.output
        assert there.output == here.output
    bad = remote(cp, "explain", "GET", "https://api.example.com/", "--credential", "agent/nobody", check=False)
    assert bad.exit_code == 1 and "no proxy credential 'agent/nobody'" in bad.output


def test_secret_status_through_the_control_plane(cp):
    home = cp[0]
    there = json.loads(remote(cp, "secret", "status", "--json").stdout)
    assert there == json.loads(rr_cli(home, "secret", "status", "--json").stdout)
    assert [(s["target"], s["credential"]) for s in there["secrets"]] == [("api", "live")]
    assert "api/live" in remote(cp, "secret", "status").output


def test_usage_reset_through_the_control_plane_asks_first_with_the_counters_it_names(cp):
    from typer.testing import CliRunner

    from rr_addon.cli import app
    from rr_addon.hybrid import registry

    home, url, engine, admin, work = cp
    before = registry.resets_after(engine, None)
    args = ["usage", "reset", "--proxy", "agent", "--credential", "a", "--server", url, "--admin", str(admin)]
    env = {"RR_HOME": str(work), "RR_DATABASE_URL": ""}
    no = CliRunner().invoke(app, args, input="n\n", env=env)
    assert no.exit_code == 1 and "reset counters usage:agent:a:* on " + url in no.output and "nothing reset" in no.output
    assert registry.resets_after(engine, None) == before
    yes = CliRunner().invoke(app, args, input="y\n", env=env)
    assert yes.exit_code == 0 and "reset 0 counters on " + url in yes.output, yes.output
    (new,) = registry.resets_after(engine, before[-1]["id"] if before else None)
    assert new["prefixes"] == ["usage:agent:a:"]
