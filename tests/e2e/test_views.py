"""Secrets never shown (docs/security.md), in mitmweb: no secret in its flow list, its REST API or its live
/updates stream at any moment of a flow's life. Started the documented
plain-mitmproxy way: `mitmweb -s rr_addon/addon.py`."""

from __future__ import annotations

import base64
import json
import ssl
import uuid

import httpx
import pytest

from rr_addon.testing.home import prepare_home
from rr_addon.testing.mitmweb import Updates, web_api
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually

UPSTREAM_SECRET = "sk_views_UPSTREAM_1234"
QUERY_SECRET = "qv_SECRET_5678"
CALLER_KEY = "KEY_views_caller"
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials:
      - {{name: live, kind: bearer, secret: {up}}}
      - {{name: q, kind: api_key, query: key, secret: {q}}}
proxies:
  - name: agent
    targets: [{{target: api, credential: live}}]
    credentials:
      - {{name: main, auth: api_key, secret: {caller}}}
      - {{name: qc, auth: api_key, secret: {caller}-q, target_credentials: {{api: q}}}}
"""


@pytest.fixture(scope="module")
def web(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-web")
    prepare_home(home, POLICY.format(port=upstream.port, up=UPSTREAM_SECRET, q=QUERY_SECRET, caller=CALLER_KEY))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, web=True, direct=True, args=["--set", "web_open_browser=false"]) as p:
        yield p


def forbidden_strings() -> list[str]:
    return [
        UPSTREAM_SECRET,
        QUERY_SECRET,
        CALLER_KEY,
        base64.b64encode(f"agent:{CALLER_KEY}".encode()).decode(),
        base64.b64encode(f"agent:{CALLER_KEY}-q".encode()).decode(),
    ]


def test_mitmweb_never_sees_a_secret(web, upstream):
    with Updates(web) as messages:
        verify = ssl.create_default_context(cafile=str(web.ca))
        marker = uuid.uuid4().hex
        with httpx.Client(proxy=web.url("agent", CALLER_KEY), verify=verify, timeout=10) as c:
            assert c.get(f"https://127.0.0.1:{upstream.port}/anything/{marker}").status_code == 200
            assert c.post(f"https://127.0.0.1:{upstream.port}/anything/{marker}", json={"x": 1}).status_code == 200
        with httpx.Client(proxy=web.url("agent", f"{CALLER_KEY}-q"), verify=verify, timeout=10) as c:
            assert c.get(f"https://127.0.0.1:{upstream.port}/anything/{marker}?key=mine").status_code == 200
        with httpx.Client(proxy=web.url(), verify=verify, timeout=10) as c:  # caller key in a request header
            assert c.get(f"https://127.0.0.1:{upstream.port}/anything/{marker}", headers={"X-RR-Authorization": f"Bearer {CALLER_KEY}"}).status_code == 200
            # a wrong key typed into Authorization: removed before any view sees it
            assert c.get(f"https://127.0.0.1:{upstream.port}/anything/{marker}", headers={"Authorization": f"Bearer {CALLER_KEY}-typo"}).status_code == 401

        # the upstream really got the secrets
        got = [r for r in upstream.received if marker in r.path]
        assert len(got) == 4
        assert got[0].header("Authorization") == f"Bearer {UPSTREAM_SECRET}"
        assert got[2].path.endswith(f"key={QUERY_SECRET}")

        with web_api(web) as api:
            flows, dump = api.get("/flows"), api.get("/flows/dump")
        assert flows.status_code == dump.status_code == 200
        # the live updates of the five flows, several each (after each hook), come in as they are served
        eventually(lambda: sum(marker in m for m in messages) >= 10, what="ten live updates")

    mine = [f for f in flows.json() if marker in f["request"]["path"]]
    assert len(mine) == 5
    assert ["Authorization", "Bearer [rr:api/live]"] in mine[0]["request"]["headers"]
    assert mine[2]["request"]["path"].endswith("key=%5Brr%3Aapi%2Fq%5D")
    assert mine[4]["response"]["status_code"] == 401
    assert any(marker in m for m in messages), "the /updates stream carried nothing"
    texts = {"REST /flows": flows.text, "REST /flows/dump": dump.content.decode("latin-1"), "/updates": "\n".join(messages), "log": web.log_text()}
    for where, text in texts.items():
        for secret in forbidden_strings():
            assert secret not in text, f"{secret!r} visible in {where}"
    # every live update of every flow (after each hook) was checked above; make sure there were several per flow
    updates = [json.loads(m) for m in messages if marker in m]
    assert len(updates) >= 10
