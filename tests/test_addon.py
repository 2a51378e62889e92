"""The addon's hooks with mitmproxy's own test helpers (taddons/tflow), on a real embedded database."""

from __future__ import annotations

import base64
import inspect
import json

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow, tutils
from typer.testing import CliRunner

from rr_addon.mitm import wire
from rr_addon.addon import RR
from rr_addon.cli import app
from rr_addon.testing.fresh import python_prints

UPSTREAM = "sk_live_wire_only"
POLICY = f"""
targets:
  - name: api
    hosts: ["api.test"]
    credentials:
      - {{name: live, kind: bearer, secret: {UPSTREAM}}}
      - {{name: q, kind: api_key, query: key, secret: "q s&cret"}}
proxies:
  - name: p
    targets: [{{target: api, credential: live}}]
    credentials:
      - {{name: c, auth: api_key, secret: caller-key}}
      - {{name: cq, auth: api_key, secret: caller-q, target_credentials: {{api: q}}}}
"""


@pytest.fixture
def home(make_home, tmp_path):
    make_home(width=None)
    (tmp_path / "p.yaml").write_text(POLICY)
    r = CliRunner().invoke(app, ["apply", "-f", str(tmp_path / "p.yaml")])
    assert r.exit_code == 0, r.output
    return tmp_path


class Hooks:
    """Calls the addon's hooks, async or not, on the taddons event loop."""

    def __init__(self, addon, loop):
        self.addon, self.loop = addon, loop

    def __getattr__(self, name):
        attr = getattr(self.addon, name)
        if not callable(attr):
            return attr

        async def inside(*args):  # on the running loop, as mitmproxy calls every hook
            result = attr(*args)
            return await result if inspect.isawaitable(result) else result

        def call(*args):
            return self.loop.run_until_complete(inside(*args))

        return call

    def __setattr__(self, name, value):
        if name in ("addon", "loop"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.addon, name, value)


@pytest.fixture
def rr(home):
    addon = RR()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, rr_database_url=f"sqlite:///{home}/rr.db")
        hooks = Hooks(addon, tctx.master.event_loop)
        yield hooks
        hooks.done()


def flow(host="api.test", port=443, path="/v1/x", headers=()):
    req = tutils.treq(host=host, port=port, scheme=b"https", path=path.encode(), headers=http.Headers(list(headers)), content=b"")
    return tflow.tflow(req=req)


def body(f):
    return json.loads(f.response.content)


def test_configure_loads_snapshot(rr):
    assert rr.snapshot is not None and rr.snapshot.version == 1


def test_bad_database_is_an_options_error(home):
    addon = RR()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError, match="rr: cannot open database"):
            tctx.configure(addon, rr_database_url=f"sqlite:///{home}/missing/dir/rr.db")


def test_allowed_request_shows_placeholder_and_strips_caller_credential(rr):
    f = flow(headers=[(b"X-RR-Authorization", b"Bearer caller-key"), (b"Accept", b"*/*")])
    rr.requestheaders(f)
    assert f.response is None
    assert f.request.headers["Authorization"] == "Bearer [rr:api/live]"
    assert "X-RR-Authorization" not in f.request.headers
    assert UPSTREAM not in json.dumps(f.get_state(), default=repr)
    injection = wire.attached(f.request)
    assert injection is not None and injection.label == "api/live"
    # the wire copy carries the secret; the flow keeps the placeholder
    wired = wire.wire_request(f.request, injection)
    assert wired.headers["Authorization"] == f"Bearer {UPSTREAM}"
    assert f.request.headers["Authorization"] == "Bearer [rr:api/live]"
    assert f.metadata["rr"]["result"] == "allow" and f.comment == "rr allow · p/c → api/live"


def test_query_injection_replaces_caller_params(rr):
    f = flow(path="/v1/x?a=1&key=mine&b=2", headers=[(b"X-RR-Authorization", b"caller-q")])
    rr.requestheaders(f)
    assert f.request.path == "/v1/x?a=1&b=2&key=%5Brr%3Aapi%2Fq%5D"
    wired = wire.wire_request(f.request, wire.attached(f.request))
    assert wired.path == "/v1/x?a=1&b=2&key=q%20s%26cret"


def test_wire_refuses_when_placeholders_were_changed(rr):
    f = flow(headers=[(b"X-RR-Authorization", b"caller-key")])
    rr.requestheaders(f)
    f.request.headers["Authorization"] = "Bearer something-else"
    assert wire.wire_request(f.request, wire.attached(f.request)) is None


def test_unauthenticated_answer(rr):
    f = flow(headers=[(b"Authorization", b"Bearer wrong")])
    rr.requestheaders(f)
    assert f.response.status_code == 401
    assert f.response.headers["content-type"] == "application/json"
    assert f.response.headers["rr-proxy-code"] == "unauthenticated"
    assert f.response.headers["rr-request-id"] == f.id
    assert body(f)["error"]["code"] == "unauthenticated"
    assert body(f)["error"]["request_id"] == f.id
    assert "Authorization" not in f.request.headers  # a mistyped secret never shows in a view
    assert wire.attached(f.request) is None
    assert f.marked == ":heavy_multiplication_x:"
    assert f.comment == "rr deny unauthenticated · no caller · caller credential matches no proxy credential"


def test_unknown_target(rr):
    f = flow(host="elsewhere.test", headers=[(b"X-RR-Authorization", b"caller-key")])
    rr.requestheaders(f)
    assert f.response.status_code == 403 and body(f)["error"]["code"] == "unknown-target"


def test_connect_credential_binds_to_the_client_connection(rr):
    connect = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="api.test", port=443, path=b"", headers=http.Headers([(b"Proxy-Authorization", b"Basic " + base64.b64encode(b"x:caller-key"))])))
    rr.client_connected(connect.client_conn)
    rr.http_connect(connect)
    assert connect.response is None
    assert "Proxy-Authorization" not in connect.request.headers
    inner = flow()
    inner.client_conn = connect.client_conn
    rr.requestheaders(inner)
    assert inner.response is None and inner.metadata["rr"]["credential"] == "c"
    other = flow()  # another client connection: the tunnel's credential does not apply
    rr.requestheaders(other)
    assert other.response.status_code == 401
    rr.client_disconnected(connect.client_conn)
    assert connect.client_conn.id not in rr.guard.clients


def test_connect_to_a_port_no_target_allows(rr):
    connect = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="api.test", port=22, path=b""))
    rr.http_connect(connect)
    assert connect.response.status_code == 403
    assert json.loads(connect.response.content)["error"]["message"] == "no target allows this port: api.test:22; check the URL's port"


class Exploding:
    def __getattr__(self, name):
        raise RuntimeError("boom")


def test_exception_fails_closed(rr, caplog):
    rr.snapshot = Exploding()
    f = flow(headers=[(b"X-RR-Authorization", b"caller-key")])
    rr.requestheaders(f)
    assert f.response.status_code == 500
    assert body(f)["error"] == {"code": "internal-error", "message": "internal error in rr", "request_id": f.id}
    assert wire.attached(f.request) is None
    assert f"request {f.id}" in caplog.text and "RuntimeError: boom" in caplog.text


def test_exception_in_response_hook_replaces_the_response(rr):
    f = flow(headers=[(b"X-RR-Authorization", b"caller-key")])
    rr.requestheaders(f)
    f.response = tutils.tresp()
    f.metadata["rr"] = Exploding()  # anything inside rr breaking
    rr.response(f)
    assert f.response.status_code == 500 and body(f)["error"]["code"] == "internal-error"


def test_no_configuration_fails_closed(rr):
    rr.snapshot = None
    f = flow(headers=[(b"X-RR-Authorization", b"caller-key")])
    rr.requestheaders(f)
    assert f.response.status_code == 500 and body(f)["error"]["message"] == "no configuration loaded"


def test_tunnel_without_http_is_closed(rr):
    f = tflow.ttcpflow()
    rr.tcp_start(f)
    assert f.error is not None and f.error.msg == "Connection killed."


def test_the_stamp_notices_every_change_after_the_decision(rr):
    f = flow(path="/v1/x?a=1", headers=[(b"X-RR-Authorization", b"caller-key")])
    rr.requestheaders(f)
    stamp = getattr(f.request, "_rr_stamp")
    assert stamp.differs(f.request.data) is None
    edits = {
        "method or scheme": lambda r: setattr(r, "method", "DELETE"),
        "destination": lambda r: setattr(r, "host", "evil.test"),
        "path or query": lambda r: setattr(r, "path", "/v1/x?a=2"),
        "headers": lambda r: r.headers.__setitem__("x-extra", "1"),
    }
    for what, edit in edits.items():
        g = f.copy()  # a fresh request with equal values
        edit(g.request)
        assert stamp.differs(g.request.data) == what
    stamp.seal_body(f.request.data)
    f.request.data.content = b"changed"  # (an edit through .content also changes content-length)
    assert stamp.differs(f.request.data) == "body"


def test_the_flow_keeps_rr_state_in_one_attribute(rr):
    """Per-flow state is one FlowState (rr_addon.mitm.flowstate), not an attribute per fact."""
    f = flow(headers=[(b"X-RR-Authorization", b"caller-key")])
    rr.requestheaders(f)
    rr.request(f)
    f.response = tutils.tresp()
    rr.responseheaders(f)
    rr.response(f)
    assert sorted(k for k in vars(f) if k.startswith("_rr")) == ["_rr"]
    assert f.metadata["rr"]["result"] == "allow" and vars(f)["_rr"].audited


def test_the_addon_loads_neither_the_cli_nor_typer():
    code = (
        "import sys; from mitmproxy.test import tflow; from rr_addon.addon import RR\n"
        "RR().explain_flow(tflow.tflow())  # the rr view and rr.explain render the decision tree\n"
        "print(sorted(m for m in sys.modules if m == 'typer' or m.startswith(('rr_addon.cli', 'typer.'))))"
    )
    assert python_prints(code) == "[]"


# ---------------------------------------------------------------------------- the response side, in-process


def test_a_secret_the_upstream_echoes_in_headers_and_body_is_masked(rr):
    f = flow(headers=[(b"X-RR-Authorization", b"caller-key")])
    rr.requestheaders(f)
    rr.request(f)
    echoed = [(b"X-Echo", f"Bearer {UPSTREAM}".encode()), (f"X-{UPSTREAM}".encode(), b"1"), (b"X-Escaped", UPSTREAM.replace("_", "%5F").encode())]
    f.response = tutils.tresp(headers=http.Headers([*echoed, (b"content-type", b"text/plain")]), content=b"")
    rr.responseheaders(f)
    assert UPSTREAM not in f.response.headers["X-Echo"] and f.response.headers["rr-request-id"] == f.id
    assert UPSTREAM not in str(f.response.headers.fields).replace("%5F", "_")  # nor in a header's name, nor percent-encoded
    pieces = [f.response.stream(f"you sent {UPSTREAM}".encode()), f.response.stream(b"")]  # the body, as mitmproxy streams it
    passed = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in pieces)
    assert UPSTREAM.encode() not in passed and passed.startswith(b"you sent ")
    rr.response(f)
    assert f.metadata["rr"]["result"] == "allow"


def test_an_upstream_that_fails_before_answering_is_a_json_502_and_audited_once(rr):
    from mitmproxy import flow as mflow

    f = flow(headers=[(b"X-RR-Authorization", b"caller-key")])
    rr.requestheaders(f)
    rr.request(f)
    f.error = mflow.Error("connection refused")
    rr.error(f)
    meta = f.metadata["rr"]
    assert (meta["result"], meta["code"], meta["status"]) == ("deny", "upstream-unavailable", 502)
    assert vars(f)["_rr"].audited and rr.requests == 1
    rr.error(f)  # a second error event writes no second record
    assert rr.requests == 1


def test_a_request_edited_while_rr_counted_it_is_refused_and_its_quota_given_back(home, tmp_path):
    """A mitmweb viewer edits the flow while `authorize` awaits (meters already counted):
    the request is refused as changed, and the request it never sent does not spend the quota."""
    (tmp_path / "m.yaml").write_text(POLICY.replace("    credentials:\n      - {name: c,", "    meters: [{name: once, per: credential, limits: {day: 1}}]\n    credentials:\n      - {name: c,", 1))
    assert CliRunner().invoke(app, ["apply", "-f", str(tmp_path / "m.yaml")]).exit_code == 0
    addon = RR()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, rr_database_url=f"sqlite:///{home}/rr.db")
        hooks = Hooks(addon, tctx.master.event_loop)
        authorize = addon.gate.authorize
        edits = []

        async def edited_meanwhile(snap, admitted, *args, **kwargs):
            verdict = await authorize(snap, admitted, *args, **kwargs)
            if edits:
                edits.pop().request.path = "/v1/elsewhere"  # the viewer's edit lands while rr decides
            return verdict

        addon.gate.authorize = edited_meanwhile
        first = flow(headers=[(b"X-RR-Authorization", b"caller-key")])
        edits.append(first)
        hooks.requestheaders(first)
        assert (first.response.status_code, body(first)["error"]["message"]) == (403, "request changed after rr decided it")
        second = flow(headers=[(b"X-RR-Authorization", b"caller-key")])
        hooks.requestheaders(second)
        assert second.response is None, body(second)  # the day's one request is still there
        hooks.done()
