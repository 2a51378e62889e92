"""A minted token is bound to its parent credential's generation (real `rr run`,
real `rr apply`): rotating the parent's key, or deleting the credential and
creating it again under the same name — even with the same key — voids every
child; an apply that changes nothing about the parent's identity does not."""

from __future__ import annotations


import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually
from tests.e2e.test_tokens import call, minted

TARGETS = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_parent_SECRET}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials:
"""
PARENT = """      - name: parent
        auth: api_key
        secret: {key}
        rules: [{{name: r, effect: deny, methods: [{denied}]}}]
"""
SIBLING = """      - name: sibling
        auth: api_key
        secret: KEY_sibling
"""


@pytest.fixture
def proxy(tmp_path, upstream, pki):
    prepare_home(tmp_path, TARGETS.format(port=upstream.port) + PARENT.format(key="KEY_one", denied="DELETE") + SIBLING)
    with ProxyProcess(tmp_path, upstream_ca=pki.ca_cert) as p:
        p.upstream_port = upstream.port
        yield p


def apply(proxy, policy: str) -> None:
    path = proxy.home / "next.yaml"
    path.write_text(policy)
    rr_cli(proxy.home, "apply", "-f", str(path), "--prune")


def until_refused(proxy, token, path):
    return eventually(lambda: (r := call(proxy, token, "GET", path)).status_code != 200 and r, what="the child refused after its parent changed")



def test_rotating_the_parents_key_voids_its_children(proxy):
    token = minted(proxy, "--ttl", "1h")
    head = TARGETS.format(port=proxy.upstream_port)
    # an apply that keeps the parent's key (a rule changes) keeps the child
    apply(proxy, head + PARENT.format(key="KEY_one", denied="PATCH") + SIBLING)
    sibling_token = minted(proxy, "--ttl", "1h")
    assert call(proxy, token, "GET", "/same-key").status_code == 200
    apply(proxy, head + PARENT.format(key="KEY_two", denied="PATCH") + SIBLING)
    r = until_refused(proxy, token, "/rotated")
    assert r.status_code == 401 and "re-created, or its key or verification changed" in r.json()["error"]["message"]
    assert until_refused(proxy, sibling_token, "/rotated-2").status_code == 401
    # the new key works, and so does a child minted after the rotation
    assert call(proxy, "KEY_two", "GET", "/new-key").status_code == 200
    assert call(proxy, minted(proxy, "--ttl", "1h"), "GET", "/new-child").status_code == 200


def test_deleting_and_recreating_the_parent_with_the_same_key_voids_its_children(proxy):
    """An attacker holding an old child waits for the credential to be re-created: it stays dead."""
    token = minted(proxy, "--ttl", "1h")
    assert call(proxy, token, "GET", "/before").status_code == 200
    head = TARGETS.format(port=proxy.upstream_port)
    apply(proxy, head + SIBLING)
    r = until_refused(proxy, token, "/deleted")
    assert r.status_code == 401 and "no longer exists" in r.json()["error"]["message"]
    apply(proxy, head + PARENT.format(key="KEY_one", denied="DELETE") + SIBLING)
    eventually(lambda: call(proxy, "KEY_one", "GET", "/recreated-key").status_code == 200, what="the re-created parent loaded")
    r = call(proxy, token, "GET", "/recreated")
    assert r.status_code == 401 and "re-created, or its key or verification changed" in r.json()["error"]["message"]
