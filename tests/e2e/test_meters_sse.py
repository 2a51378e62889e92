"""response_value meters on streamed (text/event-stream) responses, through a real
`rr run`: the tokens of OpenAI- and Anthropic-shaped streams are counted and a
limit then refuses; the stream still streams, byte for byte; a stream that
cannot be measured shows as unmeasured in `rr audit` and `rr usage`."""

from __future__ import annotations

import json
import ssl
import subprocess
import uuid

import httpx
import pytest

from rr_addon.testing.home import audit_record, prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.upstream import sse_events
from rr_addon.testing.wait import eventually

POLICY = """
targets:
  - name: llm
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: sk_sse_SECRET}}]
proxies:
  - name: {proxy}
    targets: [{{target: llm}}]
    meters:
      - {{name: total, type: response_value, response_value: {{json_path: "$.usage.total_tokens"}}, limits: {{day: 50}}, when: {{path: "^/sse/(openai|plain)"}}}}
      - {{name: input, type: response_value, response_value: {{json_path: "$.message.usage.input_tokens"}}, when: {{path: "^/sse/anthropic"}}}}
      - {{name: output, type: response_value, response_value: {{json_path: "$.usage.output_tokens"}}, when: {{path: "^/sse/anthropic"}}}}
    credentials:
      - {{name: a, auth: api_key, secret: KEY_a}}
"""


NAME = "s"  # the proxy's name: unique per test on a shared Redis


@pytest.fixture()
def proxy(tmp_path, upstream, pki):
    home = prepare_home(tmp_path / "sse", POLICY.format(port=upstream.port, proxy=NAME))
    with ProxyProcess(home, upstream_ca=pki.ca_cert) as p:
        yield p


def client(proxy, name: str = NAME) -> httpx.Client:
    return httpx.Client(proxy=proxy.url(name, "KEY_a"), verify=ssl.create_default_context(cafile=str(proxy.ca)), timeout=30)


def usage(proxy, name: str = NAME) -> dict[tuple[str | None, str], dict]:
    env = {"RR_REDIS_URL": proxy.env["RR_REDIS_URL"]} if "RR_REDIS_URL" in proxy.env else None
    rows = [json.loads(line) for line in rr_cli(proxy.home, "usage", "--proxy", name, "--json", env=env).output.splitlines()]
    return {(r["meter"], r["window"]): r for r in rows}



def settled(proxy, meter: str, field: str, expected: int, name: str = NAME) -> dict:
    """`rr usage` once the counters of the last request are flushed (250 ms)."""
    row = lambda: usage(proxy, name)[(meter, "day")]  # noqa: E731
    return eventually(lambda: (r := row())[field] == expected and r, what=lambda: f"{field} {expected}: {row()}")


def stream_holding_the_last_event(c: httpx.Client, upstream, query: str) -> tuple[httpx.Response, bytes]:
    """Read an event stream whose upstream holds its last event until this client
    has seen the first data event: only a streamed response can finish in time."""
    gate = uuid.uuid4().hex
    received = b""
    with c.stream("GET", f"https://127.0.0.1:{upstream.port}/sse/openai?{query}&gate={gate}") as r:
        for chunk in r.iter_raw():
            received += chunk
            if b"Hel" in received:
                upstream.gates.release(gate)
        upstream.gates.release(gate)
    assert r.status_code == 200, received
    assert upstream.gates.released_in_time[gate], "the first event reached the client only after the stream ended: rr buffered it"
    return r, received


def test_openai_stream_streams_unchanged_is_counted_and_the_limit_then_refuses(proxy, upstream):
    expected = b"".join(sse_events("openai", {"prompt": "20", "completion": "10"}))
    with client(proxy) as c:
        r, received = stream_holding_the_last_event(c, upstream, "prompt=20&completion=10&delay=0.05")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert received == expected  # every byte, unchanged
        assert settled(proxy, "total", "used", 30)["used"] == 30
        assert audit_record(proxy.home, r.headers["rr-request-id"], proxy=NAME)["unmeasured"] is None
        # 30 < 50: admitted; afterwards the total (60) is over the limit
        r, received = stream_holding_the_last_event(c, upstream, "prompt=20&completion=10&split=1")
        assert r.status_code == 200 and received == expected
        assert settled(proxy, "total", "used", 60)["used"] == 60
        refused = c.get(f"https://127.0.0.1:{upstream.port}/sse/openai")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "quota-exceeded" and "total" in refused.json()["error"]["message"]


def test_anthropic_stream_through_curl_counts_input_and_output(proxy, upstream):
    query = "input=25&output=9&crlf=1&split=1&delay=0.02"
    out = subprocess.run(
        ["curl", "-sS", "-N", "--proxy", proxy.url("s", "KEY_a"), "--cacert", str(proxy.ca), f"https://127.0.0.1:{upstream.port}/sse/anthropic?{query}"],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    assert out == b"".join(e.replace(b"\n", b"\r\n") for e in sse_events("anthropic", {"input": "25", "output": "9"}))
    assert settled(proxy, "input", "used", 25)["used"] == 25
    assert settled(proxy, "output", "used", 9)["used"] == 9  # message_delta's cumulative count, not a sum
    assert usage(proxy)[("output", "day")]["unmeasured"] == 0


def test_unmeasurable_and_broken_streams_are_recorded_as_unmeasured(proxy, upstream):
    with client(proxy) as c:
        r = c.get(f"https://127.0.0.1:{upstream.port}/sse/plain")
        assert r.status_code == 200 and r.content == b"".join(sse_events("plain", {}))
        assert audit_record(proxy.home, r.headers["rr-request-id"], proxy=NAME)["unmeasured"] == {"total": "not-json"}
        row = settled(proxy, "total", "unmeasured", 1)
        assert (row["used"], row["unmeasured"]) == (0, 1)
        # the stream breaks off after the usage chunk: what was seen counts, and it is marked partial
        with pytest.raises(httpx.RemoteProtocolError):
            with c.stream("GET", f"https://127.0.0.1:{upstream.port}/sse/openai?prompt=3&completion=4&break=1") as r:
                request_id = r.headers["rr-request-id"]
                for _ in r.iter_raw():
                    pass
    assert audit_record(proxy.home, request_id, proxy=NAME)["unmeasured"] == {"total": "stream-broken"}
    row = settled(proxy, "total", "unmeasured", 2)
    assert (row["used"], row["unmeasured"]) == (7, 2)


@pytest.mark.services
def test_redis_counts_stream_values_and_unmeasured_responses(tmp_path, upstream, pki, redis_url):
    name = f"sse-{uuid.uuid4().hex[:8]}"  # this run's counters only
    home = prepare_home(tmp_path / "redis", POLICY.format(port=upstream.port, proxy=name))
    with ProxyProcess(home, upstream_ca=pki.ca_cert, env={"RR_REDIS_URL": redis_url}) as proxy:
        with client(proxy, name) as c:
            assert c.get(f"https://127.0.0.1:{upstream.port}/sse/openai?prompt=8&completion=5").status_code == 200
            assert c.get(f"https://127.0.0.1:{upstream.port}/sse/plain").status_code == 200
        row = settled(proxy, "total", "unmeasured", 1, name)
        assert (row["used"], row["unmeasured"]) == (13, 1)
        rr_cli(home, "usage", "reset", "--proxy", name, "--yes", env={"RR_REDIS_URL": redis_url})
        row = usage(proxy, name)[("total", "day")]
        assert (row["used"], row["unmeasured"]) == (0, 0)
