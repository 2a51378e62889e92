"""Property: the decision path never raises, whatever a client sends."""

import json

from hypothesis import HealthCheck, given, settings, strategies as st

from rr_addon.core.decide import Limits, admit, authorize, decide
from rr_addon.core.types import Outcome, RequestFacts
from rr_addon.testing.snapshots import snapshot_from

SNAP = snapshot_from(
    {
        "targets": [
            {
                "name": "t",
                "hosts": ["api.test", "*.wild.test"],
                "caller_headers": ["x-api-key"],
                "rules": [{"name": "r1", "effect": "deny", "path": "^/admin", "headers": [{"name": "(?i)^x-", "value": "evil"}]}],
                "validate": [{"methods": ["POST"], "json_schema": {"type": "object"}}],
                "credentials": [{"name": "c", "kind": "bearer", "secret": "s"}],
            }
        ],
        "proxies": [
            {
                "name": "p",
                "targets": [{"target": "t"}],
                "rules": [
                    {"name": "b", "effect": "deny", "body": [{"json_path": "$..model", "value": "^x"}]},
                    {"name": "q", "effect": "allow", "query": [{"name": "^a$", "value": "[0-9]+"}]},
                ],
                "credentials": [{"name": "k", "auth": "api_key", "secret": "key"}, {"name": "u", "auth": "basic", "username": "ci", "secret": "pw"}],
            }
        ],
    }
)

text = st.text(max_size=60)
header_names = st.sampled_from(["authorization", "proxy-authorization", "x-rr-authorization", "x-api-key", "content-type", "x-debug", "host"])
headers = st.lists(st.tuples(header_names | st.text(max_size=10), text), max_size=6)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text, lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4), max_leaves=20)
bodies = st.none() | st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
paths = st.text(alphabet=st.characters(codec="latin-1"), max_size=40).map(lambda p: "/" + p) | st.sampled_from(["/admin", "/v1/%2e%2e/x", "//a", "/a?a=1&b", "*", ""])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PATCH", "weird"]),
    scheme=st.sampled_from(["https", "http", "ftp"]),
    host=st.sampled_from(["api.test", "x.wild.test", "API.TEST.", "nope.test", "", "[::1]"]),
    port=st.integers(0, 70000),
    path=paths,
    hs=headers,
    tunnel=st.lists(text | st.sampled_from(["Bearer key", "Basic Y2k6cHc=", "Basic !!"]), max_size=2),
    body=bodies,
)
def test_decision_never_raises(method, scheme, host, port, path, hs, tunnel, body):
    facts = RequestFacts(method, scheme, host, port, path, tuple(hs), tuple(tunnel), body)
    out = decide(SNAP, facts, 0.0, Limits(inspect_bytes=150))
    assert isinstance(out, Outcome)
    assert out.decision.allowed or out.decision.code is not None
    admitted = admit(SNAP, facts, 0.0)
    if not isinstance(admitted, Outcome):
        outcome, _ = authorize(admitted, facts, Limits(inspect_bytes=150))
        assert outcome.decision == out.decision
