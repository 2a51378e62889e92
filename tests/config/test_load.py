"""Bad configuration files: every problem named with file, line, object and field."""

import re
from pathlib import Path

import pytest

from rr_addon.config.load import ConfigErrors, load_files, resolve_secret
from rr_addon.policy.schema import EnvSecret, FileSecret
from rr_addon.config.validate import check

GOOD = """
targets:
  - name: stripe
    hosts: ["api.stripe.com"]
    credentials:
      - {name: live, kind: bearer, secret: {env: STRIPE_KEY}}
proxies:
  - name: billing
    targets: [{target: stripe, credential: live}]
    credentials:
      - {name: agent-1, auth: api_key, secret: {env: AGENT1_KEY}}
"""


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def errors_of(tmp_path, text) -> list[str]:
    p = write(tmp_path, text)
    with pytest.raises(ConfigErrors) as e:
        config, source = load_files([p])
        errs = check(config, source)
        if errs:
            raise ConfigErrors(errs)
    return [str(err).replace(str(p), "F") for err in e.value.errors]


def test_good_file_loads(tmp_path):
    config, source = load_files([write(tmp_path, GOOD)])
    assert [t.name for t in config.targets] == ["stripe"]
    assert check(config, source) == []
    assert source.line_of("proxies", "billing", ("credentials", 0, "secret")) == 11


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("- a\n- b\n", ["F: the document must be a mapping with 'targets' and/or 'proxies'"], id="not-a-mapping"),
        pytest.param("targets: []\ntargets: []\n", ["F:2: invalid YAML: duplicate key 'targets' (first on line 1)"], id="duplicate-key"),
        pytest.param(
            "targets:\n  - {{name: t}}\n", ["F:2: invalid YAML: a mapping key must be a plain value, not a list or mapping"], id="mapping-as-key"
        ),
        pytest.param("bogus: 1\n", ["F:1: bogus: unknown field 'bogus'. Valid fields: targets, proxies"], id="unknown-top-level"),
        pytest.param(
            "targets:\n  - name: t\n    hosts: [a.test]\n    colour: red\n",
            ["F:4: targets[t].colour: unknown field 'colour'. Valid fields: name, hosts, schemes, default_effect, allow_private_addresses, allow_path_parameters, allow_encoded_slashes, caller_headers, credentials, rules, filters, redact, validate, description"],
            id="unknown-field-in-target",
        ),
        pytest.param(
            "targets:\n  - name: t\n    hosts: a.test\n",
            ["F:3: targets[t].hosts: expected a list; got the string 'a.test' (write [value] for one entry)"],
            id="wrong-type",
        ),
        pytest.param(
            "targets:\n  - name: t\n    hosts: [a.test]\n    credentials:\n      - {name: c, kind: magic}\n",
            ["F:5: targets[t].credentials[c].kind: kind 'magic' is not one of api_key, bearer, basic, jwt, custom, none, oauth2_client_credentials, oauth2_refresh_token, oauth2_jwt_bearer"],
            id="unknown-kind",
        ),
        pytest.param(
            "targets:\n  - name: t\n    hosts: [a.test]\n    credentials:\n      - {name: c, kind: bearer, secret: 42}\n",
            ["F:5: targets[t].credentials[c].secret: a secret is a non-empty string, {env: NAME}, {file: PATH}, {file: PATH, watch: true} or {command: [ARGV…], timeout: S, refresh: S}"],
            id="secret-wrong-type",
        ),
        pytest.param(
            "proxies:\n  - name: p\n    credentials:\n      - name: c\n        auth: api_key\n        secret: x\n        active: maybe\n",
            ["F:7: proxies[p].credentials[c].active: expected true or false; got the string 'maybe'"],
            id="bad-bool",
        ),
        pytest.param(
            "proxies:\n  - name: 'has space'\n",
            ["F:2: proxies[has space].name: must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"],
            id="bad-name",
        ),
        pytest.param(
            "proxies:\n  - name: p\n    targets: [{target: nope}]\n",
            ["F:3: proxies[p].targets[nope]: unknown target 'nope'"],
            id="unknown-target-reference",
        ),
        pytest.param(
            "targets:\n  - {name: t, hosts: [a.test], credentials: [{name: c, kind: none}]}\n"
            "proxies:\n  - name: p\n    targets: [{target: t, credential: x}]\n",
            ["F:5: proxies[p].targets[t].credential: target 't' has no credential 'x'"],
            id="unknown-credential-reference",
        ),
        pytest.param(
            "targets:\n  - {name: t1, hosts: [a.test]}\n  - {name: t2, hosts: ['A.test']}\n"
            "proxies:\n  - name: p\n    targets: [{target: t1}, {target: t2}]\n",
            ["F:6: proxies[p].targets: host a.test belongs to both 't1' and 't2'"],
            id="duplicate-host-across-targets-of-a-proxy",
        ),
        pytest.param(
            "targets:\n  - {name: t, hosts: [a.test]}\n  - {name: t, hosts: [b.test]}\n",
            ["F:3: targets[t]: also defined in F"],
            id="duplicate-target-name",
        ),
        pytest.param(
            "targets:\n  - {name: t, hosts: [a.test]}\n"
            "proxies:\n  - name: p\n    targets: [{target: t}]\n    credentials:\n      - {name: c, auth: api_key, secret: s, target_credentials: {zz: q}}\n",
            ["F:7: proxies[p].credentials[c].target_credentials.zz: 'zz' is not a target of this proxy"],
            id="override-unknown-target",
        ),
    ],
)
def test_errors(tmp_path, text, expected):
    assert errors_of(tmp_path, text) == expected


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    (error,) = errors_of(tmp_path, "targets: [\n  {name: t,\n")
    # the wording is libyaml's (or PyYAML's pure-Python parser's); the shape is rr's
    assert re.fullmatch(r"F:[0-9]+: invalid YAML: .+", error), error


def test_several_errors_are_all_reported(tmp_path):
    text = "targets:\n  - name: t\n    hosts: ['bad host', 'https://x']\n    nope: 1\n"
    assert len(errors_of(tmp_path, text)) == 2


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigErrors, match="cannot read file"):
        load_files([tmp_path / "missing.yaml"])


def test_two_files_merge_and_name_the_duplicate(tmp_path):
    a = write(tmp_path, "targets:\n  - {name: t, hosts: [a.test]}\n", "a.yaml")
    b = write(tmp_path, "targets:\n  - {name: t, hosts: [b.test]}\n", "b.yaml")
    with pytest.raises(ConfigErrors) as e:
        load_files([a, b])
    assert str(e.value) == f"{b}:2: targets[t]: also defined in {a}"


def test_resolve_secret(tmp_path, monkeypatch):
    (tmp_path / "s.txt").write_text("from-file\n")
    assert resolve_secret("lit", tmp_path, {}) == "lit"
    assert resolve_secret(EnvSecret(env="K"), tmp_path, {"K": "v"}) == "v"
    assert resolve_secret(FileSecret(file="s.txt"), tmp_path, {}) == "from-file"
    with pytest.raises(ValueError, match="environment variable K is not set"):
        resolve_secret(EnvSecret(env="K"), tmp_path, {})
    with pytest.raises(ValueError, match="environment variable K is empty"):
        resolve_secret(EnvSecret(env="K"), tmp_path, {"K": ""})
    with pytest.raises(ValueError, match="cannot read secret file"):
        resolve_secret(FileSecret(file="nope.txt"), tmp_path, {})


def test_huge_file_is_refused_before_parsing(tmp_path):
    p = tmp_path / "huge.yaml"
    with p.open("w") as f:
        f.write("targets:\n")
        line = "  - {name: t, hosts: [a.test]}  # " + "x" * 1000 + "\n"
        for _ in range(17 * 1024):
            f.write(line)
    with pytest.raises(ConfigErrors, match=r"the limit is 16777216"):
        load_files([p])
