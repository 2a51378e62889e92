"""The policy reference (docs/policy.md) and JSON Schema (docs/policy.schema.json)
are generated from the configuration models; these tests fail when the committed
files, the sentences or the examples drift from the models, and when the schema
refuses a policy the models accept (an editor would flag a valid file)."""

import ast
import datetime
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from rr_addon.cli import app
from rr_addon.config import reference
from rr_addon.config.reference_text import OBJECTS
from rr_addon.policy.schema import Config

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = ".venv/bin/rr schema --markdown > docs/policy.md && .venv/bin/rr schema > docs/policy.schema.json"


def test_every_model_field_and_code_is_described_and_every_example_validates():
    assert reference.problems() == []


def test_committed_reference_is_what_the_models_generate():
    committed = (ROOT / "docs" / "policy.md").read_text()
    assert committed == reference.markdown(), f"docs/policy.md differs from the configuration models; regenerate it: {REGENERATE}"


def test_committed_schema_is_what_the_models_generate():
    committed = (ROOT / "docs" / "policy.schema.json").read_text()
    assert committed == reference.json_schema_text(), f"docs/policy.schema.json differs from the configuration models; regenerate it: {REGENERATE}"


def test_rr_schema_prints_them():
    r = CliRunner().invoke(app, ["schema"])
    assert r.exit_code == 0 and json.loads(r.output) == reference.json_schema()
    r = CliRunner().invoke(app, ["schema", "--markdown"])
    assert r.exit_code == 0 and r.output == reference.markdown()


def _plain(data):
    """YAML → JSON types, as an editor's language server sees a file (timestamps are strings)."""
    return json.loads(json.dumps(data, default=lambda v: v.isoformat() if isinstance(v, (datetime.date, datetime.datetime)) else str(v)))


VALIDATOR = jsonschema.Draft202012Validator(reference.json_schema())


def _policies_in_repository() -> list[tuple[str, dict]]:
    """Every policy the repository holds that the models accept: examples/ and the
    policy strings of the test suite."""
    found = []
    for path in sorted((ROOT / "examples").glob("**/*.yaml")):
        found.append((str(path.relative_to(ROOT)), yaml.safe_load(path.read_text())))
    for path in sorted((ROOT / "tests").glob("**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ("targets:" in node.value or "proxies:" in node.value):
                try:
                    data = yaml.safe_load(node.value)
                except yaml.YAMLError:
                    continue
                if isinstance(data, dict):
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno}", data))
    accepted = []
    for where, data in found:
        try:
            Config.model_validate(data)
        except Exception:  # noqa: BLE001  (the models refuse it: not a valid policy, nothing to compare)
            continue
        accepted.append((where, data))
    return accepted


POLICIES = _policies_in_repository()


def test_the_corpus_is_not_empty():
    assert len(POLICIES) >= 20


@pytest.mark.parametrize("where, data", POLICIES, ids=[w for w, _ in POLICIES])
def test_schema_accepts_every_policy_the_models_accept(where, data):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(_plain(data))]
    assert errors == [], where


SHORT_FORMS = [
    "proxies: [{name: p, rules: [{name: r, effect: deny, path: '^/admin'}]}]",
    "proxies: [{name: p, meters: [{name: m, when: {path: '^/v1/'}}]}]",
    "proxies: [{name: p, meters: [{name: m, type: {response_value: {json_path: $.n}}}]}]",
    "proxies: [{name: p, meters: [{name: m, response_value: {header: x-n}}]}]",
    "proxies: [{name: p, meters: [{name: m, limits: }]}]",
    "targets: [{name: t, hosts: [a.test], credentials: [{name: c, kind: oauth2_client_credentials, token_url: 'https://a.test/t', client_id: i, scope: [a, b]}]}]",
    "targets: [{name: t, hosts: [a.test], credentials: [{name: c, kind: bearer, secret: {file: s.txt}}]}]",
    "proxies: [{name: p, credentials: [{name: c, auth: api_key, secret: {env: K}, expires_at: 2027-01-31T00:00:00Z}]}]",
    "proxies: [{name: p, redact: [{detectors: [email, {custom: 'EMP-[0-9]+'}]}]}]",
    "proxies: [{name: p, validate: [{json_schema: true}]}]",
]


@pytest.mark.parametrize("text", SHORT_FORMS)
def test_schema_accepts_the_short_forms(text):
    data = yaml.safe_load(text)
    Config.model_validate(data)
    assert list(VALIDATOR.iter_errors(_plain(data))) == []


@pytest.mark.parametrize(
    "text",
    [
        "target: []",
        "proxies: [{name: p, meters: [{name: m, limits: {min: 5}}]}]",
        "proxies: [{name: p, mode: audit}]",
        "targets: [{name: t, hosts: [a.test], credentials: [{name: c, kind: bearr}]}]",
        "proxies: [{name: p, credentials: [{name: c, auth: api_key, secret: {envv: K}}]}]",
        "proxies: [{name: p, rules: [{name: r, effect: deny, path: {patern: x}}]}]",
    ],
)
def test_schema_refuses_what_the_models_refuse(text):
    data = yaml.safe_load(text)
    with pytest.raises(Exception):
        Config.model_validate(data)
    assert list(VALIDATOR.iter_errors(_plain(data)))


@pytest.mark.parametrize("name, heading, example", [(n, h, e) for n, h, _, e in OBJECTS if e and n not in ("EnvSecret", "FileSecret", "ExecSecret")])
def test_schema_accepts_every_example_of_the_reference(name, heading, example):
    doc = reference.json_schema()
    sub = {"$schema": doc["$schema"], "$defs": doc["$defs"], "$ref": f"#/$defs/{name}"} if name != "Config" else doc
    assert list(jsonschema.Draft202012Validator(sub).iter_errors(_plain(yaml.safe_load(example)))) == [], heading
