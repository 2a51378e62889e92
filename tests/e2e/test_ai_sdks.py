"""The AI recipes (examples/openai.yaml, anthropic.yaml, mcp.yaml; docs/ai.md) with the
vendors' real Python SDKs through a real `rr run`, against local upstreams that stream
as the vendors do (rr_addon.testing.vendors) and a real MCP server (the `mcp` SDK's,
rr_addon.testing.mcp_server).

- a streamed completion with an e-mail address in it reaches the SDK redacted,
  chunk by chunk: the upstream holds its last piece until the SDK has yielded the
  first, so the exchange finishes in time only if rr passes events on as they come;
- an MCP `tools/call` to a denied tool is refused before it leaves: the MCP server
  receives nothing of it, whatever form the call takes (batch, another content type,
  keys in another case, a huge batch); audit records name the method and tool, and
  `rr explain` says which call matched."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import uuid
from pathlib import Path

import httpx
import httpx2
import pytest
import yaml

from rr_addon.testing.home import audit_record, prepare_home, rr_cli
from rr_addon.testing.mcp_server import McpUpstream
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.upstream import Upstream
from rr_addon.testing.vendors import anthropic_messages_stream, openai_chat_stream
from rr_addon.testing.wait import eventually

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRETS = {
    "OPENAI_API_KEY": "sk-proj-upstreamOPENAIkey0000000000",
    "CHATBOT_RR_KEY": "rr-chatbot-key",
    "ANTHROPIC_API_KEY": "sk-ant-api03-upstreamANTHROPICkey000000",
    "AGENT_RR_KEY": "rr-agent-key",
    "MCP_TOKEN": "mcp-upstream-token-000000",
}
PIECES = ["Sure", ", write to ", "alice@example.com", " today", "."]


def localised(name: str, port: int) -> str:
    """The recipe with its target hosts pointed at the local upstream; nothing else changed."""
    doc = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    for t in doc["targets"]:
        t["hosts"] = [f"127.0.0.1:{port}"]
        t["allow_private_addresses"] = True
    return yaml.safe_dump(doc)


def start(tmp_path_factory, name: str, port: int, pki) -> ProxyProcess:
    home = tmp_path_factory.mktemp(f"ai-{name}")
    prepare_home(home, localised(name, port), env=SECRETS)
    return ProxyProcess(home, upstream_ca=pki.ca_cert)


@pytest.fixture(scope="module")
def vendor(pki):
    with Upstream(pki) as up:
        up.stream("/v1/chat/completions", openai_chat_stream(PIECES, up.gates))
        up.stream("/v1/messages", anthropic_messages_stream(PIECES, up.gates))
        yield up


def sdk_http(proxy: ProxyProcess, proxy_name: str, key: str) -> httpx2.Client:
    return httpx2.Client(proxy=proxy.url(proxy_name, key), verify=ssl.create_default_context(cafile=str(proxy.ca)), timeout=30)



# ---------------------------------------------------------------------- OpenAI


def test_openai_sdk_streamed_completion_arrives_redacted_chunk_by_chunk(tmp_path_factory, vendor, pki):
    import openai

    gate = uuid.uuid4().hex
    with start(tmp_path_factory, "openai", vendor.port, pki) as proxy, sdk_http(proxy, "llm-apps", SECRETS["CHATBOT_RR_KEY"]) as http:
        client = openai.OpenAI(api_key="not-the-key", base_url=f"https://127.0.0.1:{vendor.port}/v1", http_client=http, max_retries=0)
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Who owns it? Ask bob@example.org"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-test-gate": gate},
        )
        pieces = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                vendor.gates.release(gate)  # the upstream sends its last piece only now
        vendor.gates.release(gate)
        assert vendor.gates.released_in_time[gate], "the SDK saw the first chunk only after the upstream sent the last: rr buffered the stream"
        assert pieces == ["Sure", ", write to ", "[REDACTED:EMAIL]", " today", "."]
        (sent,) = [r for r in vendor.received if r.header("x-test-gate") == gate]
        assert sent.header("authorization") == "Bearer " + SECRETS["OPENAI_API_KEY"]
        assert b"bob@example.org" not in sent.body and b"[REDACTED:EMAIL]" in sent.body  # the prompt, before it left
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        record = audit_record(proxy.home, stream.response.headers["rr-request-id"])
        assert record["redactions"] == {"email": 2} and record["unmeasured"] is None
        # the tokens meter read the usage chunk of the stream it redacted (9 prompt + 5 completion)
        eventually(lambda: _meter(proxy, "llm-apps", "tokens") == 14, what=lambda: f"14 tokens counted, not {_meter(proxy, 'llm-apps', 'tokens')}")


def _meter(proxy: ProxyProcess, proxy_name: str, meter: str) -> int:
    rows = [json.loads(line) for line in rr_cli(proxy.home, "usage", "--proxy", proxy_name, "--json").output.splitlines()]
    return sum(r["used"] for r in rows if r["meter"] == meter and r["window"] == "day")


# ---------------------------------------------------------------------- Anthropic


def test_anthropic_sdk_streamed_message_arrives_redacted_chunk_by_chunk(tmp_path_factory, vendor, pki):
    import anthropic

    gate = uuid.uuid4().hex
    with start(tmp_path_factory, "anthropic", vendor.port, pki) as proxy, sdk_http(proxy, "agents", SECRETS["AGENT_RR_KEY"]) as http:
        client = anthropic.Anthropic(api_key="not-the-key", base_url=f"https://127.0.0.1:{vendor.port}", http_client=http, max_retries=0)
        texts = []
        with client.messages.stream(
            model="claude-3-5-haiku-latest",
            max_tokens=100,
            messages=[{"role": "user", "content": "Mail carol@example.net the summary"}],
            extra_headers={"x-test-gate": gate},
        ) as stream:
            for text in stream.text_stream:
                texts.append(text)
                vendor.gates.release(gate)
            final = stream.get_final_message()
        vendor.gates.release(gate)
        assert vendor.gates.released_in_time[gate], "the SDK saw the first delta only after the upstream sent the last: rr buffered the stream"
        assert texts == ["Sure", ", write to ", "[REDACTED:EMAIL]", " today", "."]
        assert final.content[0].text == "Sure, write to [REDACTED:EMAIL] today."
        (sent,) = [r for r in vendor.received if r.header("x-test-gate") == gate]
        assert sent.header("x-api-key") == SECRETS["ANTHROPIC_API_KEY"]
        assert b"carol@example.net" not in sent.body
        counted = lambda: (_meter(proxy, "agents", "input-tokens"), _meter(proxy, "agents", "output-tokens"))  # noqa: E731
        eventually(lambda: counted() == (9, 5), what=lambda: f"(9, 5) tokens counted, not {counted()}")


# ---------------------------------------------------------------------- MCP


@pytest.fixture(scope="module")
def mcp_setup(tmp_path_factory, pki):
    with McpUpstream(pki) as server, start(tmp_path_factory, "mcp", server.port, pki) as proxy:
        yield server, proxy


async def _session(proxy: ProxyProcess, url: str, work):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    verify = ssl.create_default_context(cafile=str(proxy.ca))
    async with httpx2.AsyncClient(proxy=proxy.url("agents", SECRETS["AGENT_RR_KEY"]), verify=verify, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)


def test_mcp_sdk_lists_and_calls_allowed_tools_with_results_redacted(mcp_setup):
    server, proxy = mcp_setup

    async def work(session):
        tools = await session.list_tools()
        result = await session.call_tool("read_file", {"path": "/srv/report.txt"})
        return [t.name for t in tools.tools], result

    names, result = asyncio.run(_session(proxy, server.url, work))
    assert names == ["read_file", "delete_file"]
    assert not result.is_error and result.content[0].text == "/srv/report.txt: owned by [REDACTED:EMAIL]"


def _denials(proxy: ProxyProcess, rule: str) -> int:
    rows = [json.loads(line) for line in rr_cli(proxy.home, "audit", "--json").output.splitlines()]
    return sum(1 for r in rows if r["mcp_tool"] == "delete_file" and r["result"] == "deny" and r["rule"] == rule)


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for e in group.exceptions for leaf in _leaves(e)]
    return [group]


@pytest.mark.parametrize("path, rule", [("/srv/old.txt", "no-destructive-tools"), ("/etc/passwd", "no-destructive-tools")])
def test_mcp_sdk_call_to_a_denied_tool_is_refused_before_it_leaves(mcp_setup, path, rule):
    from mcp import MCPError

    server, proxy = mcp_setup
    before, denied = len(server.bodies), _denials(proxy, rule)

    async def work(session):
        return await session.call_tool("delete_file", {"path": path})

    with pytest.raises(BaseExceptionGroup) as raised:
        asyncio.run(_session(proxy, server.url, work))
    # the SDK turns rr's 403 into a JSON-RPC error for the call
    assert [type(e) for e in _leaves(raised.value)] == [MCPError]
    assert server.deleted == []
    assert not any(b"delete_file" in b for b in server.bodies[before:]), "the refused call reached the MCP server"
    assert any(b'"initialize"' in b for b in server.bodies[before:])  # the session itself went through
    # rr refused it, and says so in the audit trail
    eventually(lambda: _denials(proxy, rule) == denied + 1, what=lambda: f"{denied + 1} denials by {rule}, not {_denials(proxy, rule)}")


def _raw(proxy: ProxyProcess, server: McpUpstream, content: bytes, content_type: str = "application/json") -> httpx.Response:
    with httpx.Client(proxy=proxy.url("agents", SECRETS["AGENT_RR_KEY"]), verify=ssl.create_default_context(cafile=str(proxy.ca)), timeout=30) as c:
        return c.post(server.url, content=content, headers={"content-type": content_type, "accept": "application/json, text/event-stream"})


def _call(tool: str, id: int = 1, **arguments) -> dict:
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


@pytest.mark.parametrize(
    "content, content_type, status, rule",
    [
        (json.dumps(_call("delete_file", path="/x")), "application/json", 403, "no-destructive-tools"),
        (json.dumps([_call("read_file", 1, path="/x"), _call("delete_file", 2, path="/x")]), "application/json", 403, "no-destructive-tools"),
        (json.dumps(_call("delete_file", path="/x")), "text/plain", 403, "no-destructive-tools"),  # another content type
        (json.dumps({"jsonrpc": "2.0", "id": 1, "Method": "tools/call", "Params": {"Name": "delete_file"}}), "application/json", 403, "no-destructive-tools"),
        (json.dumps({"method": "tools/call", "params": {"name": "delete_file"}}), "application/json", 403, "no-destructive-tools"),  # no "jsonrpc"
        (json.dumps(_call("read_file", path="//etc/shadow")), "application/json", 403, "nothing-under-etc"),
        (json.dumps(_call("read_file", path="/srv/../etc/shadow")), "application/json", 403, "nothing-under-etc"),
        (json.dumps([_call("read_file", i, path="/x") for i in range(65)]), "application/json", 403, "no-destructive-tools"),  # too many to vouch for
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_file", "name": "delete_file"}}', "application/json", 400, None),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "delete_file"},}', "text/plain", 403, "no-destructive-tools"),
    ],
    ids=["single", "batch", "text-plain", "key-case", "no-jsonrpc-member", "double-slash", "dot-dot", "huge-batch", "duplicate-key", "not-json"],
)
def test_mcp_calls_that_try_to_slip_past_the_rules_never_reach_the_server(mcp_setup, content, content_type, status, rule):
    server, proxy = mcp_setup
    before = len(server.bodies)
    body = content.encode() if isinstance(content, str) else content
    r = _raw(proxy, server, body, content_type)
    assert r.status_code == status, r.text
    if rule is not None:
        assert f"rule {rule})" in r.json()["error"]["message"]
    audit_record(proxy.home, r.headers["rr-request-id"])  # the exchange is over: a forwarded call would be recorded by now
    assert server.bodies[before:] == [], "a refused call reached the MCP server"


def test_mcp_audit_names_method_and_tool_and_explain_says_which_call_matched(mcp_setup):
    server, proxy = mcp_setup
    r = _raw(proxy, server, json.dumps(_call("drop_table", table="users")).encode())
    assert r.status_code == 403
    rec = audit_record(proxy.home, r.headers["rr-request-id"])
    assert (rec["mcp_method"], rec["mcp_tool"], rec["result"], rec["rule"]) == ("tools/call", "drop_table", "deny", "no-destructive-tools")
    body = json.dumps([_call("read_file", 1, path="/srv/a"), _call("delete_file", 2, path="/srv/a")])
    out = rr_cli(proxy.home, "explain", "--credential", "agents/agent", "POST", server.url, "-H", "content-type: application/json", "-d", body, check=False).output
    flat = re.sub(r"[\s│├└─]+", " ", out)  # the tree as one line (the console may wrap it)
    assert "✓ no-destructive-tools deny p500 matched; mcp: tools/call read_file did not match; tools/call delete_file matched" in flat, out
    assert "403 access-denied" in flat
