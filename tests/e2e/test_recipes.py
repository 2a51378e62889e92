"""The recipes in examples/ (issue 14): each applies as written, and each one's
promises hold end to end through a real proxy against a local upstream that
answers as the vendor would.

The recipe files name the real hosts (api.openai.com, …); the tests never reach
them: a copy of each recipe has its target hosts rewritten to the local
upstream (127.0.0.1:<port>, with allow_private_addresses) and, for the JWT
recipe, the IdP's URLs to the local test IdP. Nothing else is changed."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.idp import IdP
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.upstream import Received, Upstream, sse_events
from rr_addon.testing.wait import eventually

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRETS = {
    "OPENAI_API_KEY": "sk-proj-upstreamOPENAIkey0000000000",
    "CHATBOT_RR_KEY": "rr-chatbot-key",
    "GITHUB_TOKEN": "ghp_upstreamGITHUBtoken",
    "CI_RR_KEY": "rr-ci-key",
    "STRIPE_SECRET_KEY": "sk_test_upstreamSTRIPEkey",
    "BILLING_RR_KEY": "rr-billing-key",
    "ALERTS_RR_KEY": "rr-alerts-key",
    "INVENTORY_API_TOKEN": "inventory-service-token",
    "ANTHROPIC_API_KEY": "sk-ant-api03-upstreamANTHROPICkey000000",
    "AGENT_RR_KEY": "rr-agent-key",
    "MCP_TOKEN": "mcp-upstream-token-000000",
}
RECIPES = ["openai", "anthropic", "mcp", "github-ci", "stripe", "slack-webhook", "internal-jwt"]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_applies_as_written_without_warnings(tmp_path, name):
    rr_cli(tmp_path, "init")
    r = rr_cli(tmp_path, "apply", "-f", str(EXAMPLES / f"{name}.yaml"), env=SECRETS, check=False)
    assert r.exit_code == 0, r.output
    assert "applied: configuration version 1" in r.output
    assert "warning" not in r.output.lower()


def localised(name: str, port: int, idp: IdP | None = None) -> str:
    """The recipe with its target hosts pointed at the local upstream (and the IdP's URLs at the test IdP)."""
    doc = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    for t in doc["targets"]:
        t["hosts"] = [f"127.0.0.1:{port}"]
        t["allow_private_addresses"] = True
    for p in doc["proxies"]:
        for c in p["credentials"]:
            if c["auth"] == "jwt_verify":
                assert idp is not None
                c["jwks_url"], c["issuer"] = idp.jwks_url, idp.issuer
    return yaml.safe_dump(doc)


@pytest.fixture(scope="module")
def vendor(pki):
    """A local upstream of its own, so vendor-shaped answers do not change the shared echo."""
    with Upstream(pki) as up:
        yield up


def start(tmp_path_factory, vendor: Upstream, pki, name: str, idp: IdP | None = None):
    home = tmp_path_factory.mktemp(f"recipe-{name}")
    prepare_home(home, localised(name, vendor.port, idp), env=SECRETS)
    return ProxyProcess(home, upstream_ca=pki.ca_cert)


class Caller:
    def __init__(self, proxy: ProxyProcess, vendor: Upstream, proxy_name: str, key: str):
        self.proxy_url = proxy.url(proxy_name, key)
        self.verify = ssl.create_default_context(cafile=str(proxy.ca))
        self.base = f"https://127.0.0.1:{vendor.port}"
        self.vendor = vendor

    def __call__(self, method: str, path: str, **kw) -> tuple[httpx.Response, list[Received]]:
        """The response, and what the upstream received for this request (by a marker header)."""
        marker = uuid.uuid4().hex
        headers = {"x-marker": marker, **kw.pop("headers", {})}
        with httpx.Client(proxy=self.proxy_url, verify=self.verify, timeout=20) as client:
            r = client.request(method, self.base + path, headers=headers, **kw)
        return r, [x for x in self.vendor.received if x.header("x-marker") == marker]


def refused(r: httpx.Response, got: list, status: int, code: str, rule: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    if rule is not None:
        assert f"rule {rule})" in err["message"], err
    assert got == [], "a refused request reached the upstream"


# ---------------------------------------------------------------------- OpenAI


def _completion(req: Received) -> tuple[int, str, bytes]:
    body = json.loads(req.body)
    if body.get("stream"):
        return 200, "text/event-stream", b"".join(sse_events("openai", {"prompt": "7", "completion": "5"}))
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Write to jane@example.com or call +1 415 555 2671."}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
    }
    return 200, "application/json", json.dumps(answer).encode()


@pytest.fixture(scope="module")
def openai(tmp_path_factory, vendor, pki):
    vendor.answer("/v1/chat/completions", _completion)
    proxy = start(tmp_path_factory, vendor, pki, "openai")
    with proxy:
        yield proxy, Caller(proxy, vendor, "llm-apps", SECRETS["CHATBOT_RR_KEY"])


def chat(model: str | None = "gpt-4o-mini", **extra) -> dict:
    body = {"messages": [{"role": "user", "content": "Summarise the mail from bob@example.com"}], **extra}
    return body if model is None else {"model": model, **body}


def test_openai_allowed_call_redacts_prompt_and_completion_and_injects_the_key(openai):
    _, call = openai
    r, got = call("POST", "/v1/chat/completions", json=chat())
    assert r.status_code == 200, r.text
    (sent,) = got
    assert sent.header("authorization") == "Bearer " + SECRETS["OPENAI_API_KEY"]
    assert b"bob@example.com" not in sent.body and b"[REDACTED:EMAIL]" in sent.body  # the prompt, before it left
    content = r.json()["choices"][0]["message"]["content"]
    assert "jane@example.com" not in content and "[REDACTED:EMAIL]" in content and "[REDACTED:PHONE]" in content
    assert r.json()["usage"]["total_tokens"] == 30


@pytest.mark.parametrize(
    "method, path, body, rule",
    [
        ("POST", "/v1/chat/completions", chat("gpt-4o"), "approved-models"),
        ("POST", "/v1/chat/completions", chat(None), "approved-models"),
        ("POST", "/v1/chat/completions", chat(stream=True), "streams-report-usage"),
        ("POST", "/v1/chat/completions/x", chat(), None),
        ("POST", "/x/v1/chat/completions", chat(), None),
        ("GET", "/v1/files", None, None),
        ("DELETE", "/v1/models/ft-1", None, None),
    ],
    ids=["other-model", "no-model", "stream-without-usage", "below-the-endpoint", "above-the-endpoint", "files", "delete-model"],
)
def test_openai_refusals(openai, method, path, body, rule):
    _, call = openai
    r, got = call(method, path, json=body) if body is not None else call(method, path)
    refused(r, got, 403, "access-denied", rule)


def test_openai_tokens_are_metered_for_json_and_streamed_answers(openai):
    proxy, call = openai
    before = _settled_tokens(proxy)
    r, _ = call("POST", "/v1/chat/completions", json=chat())
    assert r.status_code == 200
    r, _ = call("POST", "/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "data: [DONE]" in r.text
    assert _tokens(proxy, before + 30 + 12) == before + 42


def _settled_tokens(proxy) -> int:
    """The total once earlier tests' counts have been flushed: two reads a few flushes apart agree."""
    value = _tokens(proxy)
    while True:
        time.sleep(0.6)
        again = _tokens(proxy)
        if again == value:
            return value
        value = again


def _tokens(proxy, expect: int | None = None) -> int:
    """The `tokens` meter's day total for the chatbot (waiting for the 250 ms flush when `expect` is given)."""

    def read() -> int:
        out = rr_cli(proxy.home, "usage", "--proxy", "llm-apps", "--json").output
        return sum(r["used"] for r in map(json.loads, out.splitlines()) if r["meter"] == "tokens" and r["window"] == "day")

    if expect is not None:
        try:
            eventually(lambda: read() == expect, what=f"{expect} tokens")
        except TimeoutError:
            pass  # the caller's assertion shows what there is
    return read()


# ---------------------------------------------------------------------- GitHub


@pytest.fixture(scope="module")
def github(tmp_path_factory, vendor, pki):
    proxy = start(tmp_path_factory, vendor, pki, "github-ci")
    with proxy:
        yield Caller(proxy, vendor, "ci", SECRETS["CI_RR_KEY"])


@pytest.mark.parametrize("method, path", [("GET", "/repos/acme/app/pulls?state=open"), ("HEAD", "/repos/acme/app"), ("GET", "/orgs/acme/repos"), ("GET", "/rate_limit")])
def test_github_reads_of_the_org_are_allowed(github, method, path):
    r, got = github(method, path)
    assert r.status_code == 200, r.text
    assert got[0].header("authorization") == "Bearer " + SECRETS["GITHUB_TOKEN"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/repos/acme-evil/app"),  # a prefix is whole segments
        ("GET", "/repos/other/app"),
        ("POST", "/repos/acme/app/issues"),
        ("PATCH", "/repos/acme/app"),
        ("DELETE", "/repos/acme/app"),
        ("POST", "/graphql"),
        ("GET", "/rate_limit/x"),
        ("GET", "/user"),
    ],
)
def test_github_everything_else_is_refused(github, method, path):
    r, got = github(method, path)
    refused(r, got, 403, "access-denied")


# ---------------------------------------------------------------------- Stripe


def _customer(req: Received) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps({"id": "cus_1", "object": "customer", "email": "jenny.rosen@example.com", "name": "Jenny Rosen"}).encode()


@pytest.fixture(scope="module")
def stripe(tmp_path_factory, vendor, pki):
    vendor.answer("/v1/customers/cus_1", _customer)
    proxy = start(tmp_path_factory, vendor, pki, "stripe")
    with proxy:
        yield Caller(proxy, vendor, "billing", SECRETS["BILLING_RR_KEY"])


def test_stripe_customer_emails_are_redacted(stripe):
    r, got = stripe("GET", "/v1/customers/cus_1")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "cus_1", "object": "customer", "email": "[REDACTED:EMAIL]", "name": "Jenny Rosen"}
    assert got[0].header("authorization") == "Bearer " + SECRETS["STRIPE_SECRET_KEY"]
    r, _ = stripe("POST", "/v1/charges", data={"amount": "100", "currency": "usd"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "method, path, rule",
    [
        ("POST", "/v1/refunds", "no-refunds"),
        ("GET", "/v1/refunds/re_1", "no-refunds"),
        ("POST", "/V1/Refunds", "no-refunds"),
        ("POST", "/v1/charges/ch_1/refunds", "no-charge-refunds"),
        ("POST", "/v1/charges/ch_1/refund", "no-charge-refunds"),
        ("POST", "/v1/charges/ch_1/refunds/re_1", "no-charge-refunds"),
        ("DELETE", "/v1/customers/cus_1", "no-deletes"),
    ],
)
def test_stripe_refunds_and_deletes_are_refused(stripe, method, path, rule):
    r, got = stripe(method, path)
    refused(r, got, 403, "access-denied", rule)


def test_stripe_per_minute_quota(stripe):
    """60 a minute: a 429 comes within 61 requests, or within 121 if the test straddles
    a minute boundary (the window then starts afresh once)."""
    for n in range(121):
        r, got = stripe("GET", "/v1/balance")
        if r.status_code == 429:
            break
        assert r.status_code == 200, r.text
    else:
        pytest.fail("no 429 after 121 requests")
    refused(r, got, 429, "quota-exceeded")
    assert int(r.headers["retry-after"]) >= 1


# ---------------------------------------------------------------------- Slack


@pytest.fixture(scope="module")
def slack(tmp_path_factory, vendor, pki):
    proxy = start(tmp_path_factory, vendor, pki, "slack-webhook")
    with proxy:
        yield Caller(proxy, vendor, "notifier", SECRETS["ALERTS_RR_KEY"])


def test_slack_message_goes_out_with_secrets_scrubbed(slack):
    text = "deploy failed; token ghp_" + "a" * 36 + " card 4242 4242 4242 4242"
    r, got = slack("POST", "/services/T0ACME000/B0123/XyZsecret", json={"text": text})
    assert r.status_code == 200, r.text
    (sent,) = got
    assert json.loads(sent.body) == {"text": "deploy failed; token [REDACTED:SECRET] card [REDACTED:CREDIT_CARD]"}
    assert sent.path == "/services/T0ACME000/B0123/XyZsecret"


@pytest.mark.parametrize(
    "method, path, kw, status, code",
    [
        ("POST", "/services/T0OTHER00/B0123/x", {"json": {"text": "hi"}}, 403, "access-denied"),
        ("POST", "/services/T0ACME000/B0123/x/y", {"json": {"text": "hi"}}, 403, "access-denied"),
        ("GET", "/services/T0ACME000/B0123/x", {}, 403, "access-denied"),
        ("POST", "/services/T0ACME000/B0123/x", {"json": {"blocks": []}}, 400, "invalid-request"),
        ("POST", "/services/T0ACME000/B0123/x", {"json": {"text": "x" * 4001}}, 400, "invalid-request"),
        ("POST", "/services/T0ACME000/B0123/x", {"content": b"text=hi", "headers": {"content-type": "text/plain"}}, 415, "unsupported-media-type"),
    ],
    ids=["other-workspace", "deeper-path", "get", "no-text", "too-long", "not-json"],
)
def test_slack_refusals(slack, method, path, kw, status, code):
    r, got = slack(method, path, **kw)
    refused(r, got, status, code)


# ---------------------------------------------------------------------- internal API, JWT callers


@pytest.fixture(scope="module")
def internal(tmp_path_factory, vendor, pki, idp):
    proxy = start(tmp_path_factory, vendor, pki, "internal-jwt", idp)
    with proxy:
        yield proxy


def as_workload(proxy, vendor, idp, **claims) -> Caller:
    return Caller(proxy, vendor, "internal", idp.token(aud="inventory", **claims))


def test_internal_api_decides_on_verified_claims(internal, vendor, idp):
    reader = as_workload(internal, vendor, idp, scope="inventory:read")
    writer = as_workload(internal, vendor, idp, scope="profile inventory:write")
    r, got = reader("GET", "/v1/items/42")
    assert r.status_code == 200, r.text
    assert got[0].header("authorization") == "Bearer " + SECRETS["INVENTORY_API_TOKEN"]  # never the caller's JWT
    refused(*reader("POST", "/v1/items", json={"sku": "x"}), 403, "access-denied")
    r, got = writer("POST", "/v1/items", json={"sku": "x"})
    assert r.status_code == 200, r.text
    refused(*writer("POST", "/v1/admin/reindex", json={}), 403, "access-denied")
    refused(*writer("DELETE", "/v1/items/42"), 403, "access-denied", "no-deletes")
    refused(*as_workload(internal, vendor, idp, scope="inventory:readonly")("GET", "/v1/items/42"), 403, "access-denied")


def test_internal_api_refuses_tokens_it_cannot_verify(internal, vendor, idp):
    wrong_audience = Caller(internal, vendor, "internal", idp.token(aud="billing", scope="inventory:read"))
    refused(*wrong_audience("GET", "/v1/items/42"), 401, "unauthenticated")
    expired = Caller(internal, vendor, "internal", idp.token(aud="inventory", scope="inventory:read", exp_in=-600))
    refused(*expired("GET", "/v1/items/42"), 401, "unauthenticated")
