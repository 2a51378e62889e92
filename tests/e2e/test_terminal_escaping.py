"""Everything a caller controls is escaped before a terminal sees it (issue 23,
item 3): ESC, OSC, BEL and C1 bytes and Rich markup sent in the method, path,
headers and credentials of requests through a real `rr run` appear in its log
and in `rr audit` (table and --follow) as visible escapes and literal text —
never as terminal commands or styling."""

from __future__ import annotations

import base64
import json
import os
import queue
import socket
import subprocess
import threading

import pytest

from rr_addon.testing.home import database_url, prepare_home, rr_cli
from rr_addon.testing.proxy import BIN, ProxyProcess
from rr_addon.testing.wait import eventually

RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\x00")
PATH = b"/a\x1b[2J\x1b]0;pwned\x07[red]X[/red][link=https://e.example]click[/link]"
PATH_SHOWN = "/a\\x1b[2J\\x1b]0;pwned\\x07[red]X[/red][link=https://e.example]click[/link]"
MARKUP_PATH = b"/ok[red]X[/red][link=https://e.example]click[/link]"  # no control characters: authenticated, it is decided
CANONICAL = "/ok%5Bred%5DX%5B/red%5D%5Blink=https:/e.example%5Dclick%5B/link%5D"  # what rr decides on (and records)
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    schemes: [http]
    allow_private_addresses: true
    credentials: [{{name: b, kind: bearer, secret: sk_SECRET}}]
proxies:
  - name: agents
    targets: [{{target: api}}]
    rules: [{{name: no-deletes, effect: deny, methods: [DELETE]}}]
    credentials: [{{name: k, auth: api_key, secret: agent-key}}]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, plain_upstream):
    home = tmp_path_factory.mktemp("rr-escape")
    prepare_home(home, POLICY.format(port=plain_upstream.port))
    # flow_detail=2: mitmproxy's flow printer shows every request and its headers too
    with ProxyProcess(home, args=["--set", "flow_detail=2"]) as p:
        p.upstream_port = plain_upstream.port
        yield p


def send(proxy, raw: bytes) -> tuple[int, str | None]:
    """One raw HTTP/1.1 request to the proxy (plain-HTTP proxy form): (status, rr-request-id)."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    rid = next((line.split(":", 1)[1].strip() for line in head[1:] if line.lower().startswith("rr-request-id:")), None)
    return status, rid


def request(proxy, method: bytes, path: bytes, headers: list[bytes]) -> bytes:
    host = f"127.0.0.1:{proxy.upstream_port}".encode()
    return method + b" http://" + host + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


EVIL_HEADERS = [b"X-Evil: \x1b[31mred\x1b]0;title\x07 [bold]b[/bold]", b"User-Agent: ua\x9b2J"]
AUTH = b"Proxy-Authorization: Bearer agent-key"


@pytest.fixture(scope="module")
def sent(proxy):
    """The hostile requests, sent once: name -> (status, request id)."""
    evil_user = base64.b64encode(b"us\x1b[2Jer[red]:wrong")
    out = {
        "path": send(proxy, request(proxy, b"GET", PATH, EVIL_HEADERS)),
        "method": send(proxy, request(proxy, b"G\x1b[2JET", b"/m", EVIL_HEADERS)),
        "basic-user": send(proxy, request(proxy, b"GET", b"/u", [b"Proxy-Authorization: Basic " + evil_user])),
        "control-in-path": send(proxy, request(proxy, b"DELETE", b"/d\x1b]8;;https://e.example\x07here", [AUTH, *EVIL_HEADERS])),
        "denied": send(proxy, request(proxy, b"DELETE", MARKUP_PATH, [AUTH, *EVIL_HEADERS])),
        "allowed": send(proxy, request(proxy, b"GET", MARKUP_PATH, [AUTH, *EVIL_HEADERS])),
    }
    audited = lambda: {json.loads(line)["request_id"] for line in rr_cli(proxy.home, "audit", "--json").output.splitlines() if line.startswith("{")}  # noqa: E731
    eventually(lambda: all(rid in audited() for _, rid in out.values()), what="every audit record")  # written in batches
    return out


def test_requests_were_answered_as_expected(sent):
    assert {k: v[0] for k, v in sent.items()} == {"path": 401, "method": 401, "basic-user": 401, "control-in-path": 400, "denied": 403, "allowed": 200}


def test_the_log_shows_control_characters_escaped(proxy, sent):
    denials = [rid for key, (status, rid) in sent.items() if key != "allowed"]
    log = eventually(lambda: all(f" deny {rid} " in (t := proxy.log_text()) for rid in denials) and t, what="every denial logged")
    for c in RAW_CONTROLS:
        assert c not in log, (c, log)
    lines = log.splitlines()

    def line_of(rid: str) -> str:
        (line,) = [x for x in lines if f" deny {rid} " in x]
        return line.split("] ", 1)[1]

    at = f"http://127.0.0.1:{proxy.upstream_port}"
    assert line_of(sent["path"][1]) == (
        f"deny {sent['path'][1]} caller=- GET {at}{PATH_SHOWN} -> 401 unauthenticated scope=- rule=-: no caller credential presented"
    )
    assert line_of(sent["method"][1]) == (
        f"deny {sent['method'][1]} caller=- G\\x1b[2JET {at}/m -> 401 unauthenticated scope=- rule=-: no caller credential presented"
    )
    assert line_of(sent["control-in-path"][1]) == (
        f"deny {sent['control-in-path'][1]} caller=agents/k DELETE {at}/d\\x1b]8;;https://e.example\\x07here"
        " -> 400 invalid-request scope=- rule=-: NUL or control character in path"
    )
    assert line_of(sent["denied"][1]) == (
        f"deny {sent['denied'][1]} caller=agents/k DELETE {at}{CANONICAL} -> 403 access-denied scope=proxy rule=no-deletes: denied by rule"
    )
    # mitmproxy's own flow printer escapes the header values it shows
    assert "\\x1b[31mred\\x1b]0;title\\x07 [bold]b[/bold]" in log


def test_rr_audit_table_shows_data_not_markup(proxy, sent, tmp_path):
    port = proxy.upstream_port
    imported = tmp_path / "imported.jsonl"  # records from a file: every field is data
    imported.write_text(
        json.dumps(
            {
                "ts": "2026-01-01T00:00:00.000+00:00",
                "request_id": "imported-1",
                "result": "deny",
                "status": 403,
                "code": "access-denied",
                "proxy": "p\x1b[2J",
                "credential": "[red]c[/red]",
                "target": "t\x9b",
                "method": "GET",
                "scheme": "https",
                "host": "h.example",
                "port": 443,
                "path": "/i",
                "scope": "proxy",
                "rule": "r\x07[blink]",
            }
        )
        + "\n"
    )
    rr_cli(proxy.home, "audit", "import", str(imported))
    r = rr_cli(proxy.home, "audit", "--limit", "50", env={"COLUMNS": "400"})
    for c in RAW_CONTROLS:
        assert c not in r.output
    rows = {line.split("│")[-2].strip(): [cell.strip() for cell in line.split("│")[1:-1]] for line in r.output.splitlines() if line.count("│") > 5}
    assert rows[sent["path"][1]][4] == f"GET 127.0.0.1:{port}{PATH_SHOWN}"
    assert rows[sent["method"][1]][4] == f"G\\x1b[2JET 127.0.0.1:{port}/m"
    assert rows[sent["allowed"][1]][4] == f"GET 127.0.0.1:{port}{CANONICAL}"
    assert rows[sent["denied"][1]][4] == f"DELETE 127.0.0.1:{port}{CANONICAL}"
    assert rows[sent["denied"][1]][2] == "agents/k"
    assert rows["imported-1"][2:5] == ["p\\x1b[2J/[red]c[/red]", "t\\x9b", "GET h.example/i"]
    assert rows["imported-1"][7] == "proxy/r\\x07[blink]"


def test_rr_audit_follow_shows_data_not_markup(proxy, sent):
    db = database_url(proxy.home)  # PostgreSQL runs (RR_TEST_DATABASE=postgres)
    env = {**os.environ, "RR_HOME": str(proxy.home), "COLUMNS": "400", **({"RR_DATABASE_URL": db} if db else {})}
    follow = subprocess.Popen(
        [str(BIN / "rr"), "audit", "--follow", "--limit", "1", "--interval", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follow.stdout], daemon=True)
    reader.start()
    raw = b""
    try:
        while not lines.get(timeout=30).startswith("└".encode()):
            pass  # the latest record's table is printed: from now on it follows
        _, rid = send(proxy, request(proxy, b"G\x1b[2JET", PATH, EVIL_HEADERS))
        raw = lines.get(timeout=20)
    except queue.Empty:
        pass
    finally:
        follow.terminate()
        follow.wait(10)
        reader.join(10)
        follow.stdout.close()
        err = follow.stderr.read().decode()
        follow.stderr.close()
    assert raw, f"rr audit --follow printed nothing: {err}"
    line = raw.decode("utf-8").rstrip("\n")
    for c in RAW_CONTROLS:
        assert c not in line
    assert f" 401 unauthenticated  - -> -  G\\x1b[2JET 127.0.0.1:{proxy.upstream_port}{PATH_SHOWN}  " in line, line
    assert line.endswith(f"  {rid}"), line
    assert "Traceback" not in err
