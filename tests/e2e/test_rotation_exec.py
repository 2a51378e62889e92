"""`{command: [..], timeout: S, refresh: S}` target secrets under a real `rr
run` (issue 19, item 2): a script whose output changes is run again every
refresh and its new output is injected with no restart and no `rr apply`; the
replaced value stays masked; a failing, silent or hanging command keeps the
last good value, logs an error and counts in the metrics, and the hanging one
is killed; `rr secret status` shows the command, never a value (nor what the
command printed on standard error). And the grace period survives moving the
secret to another source in the configuration."""

from __future__ import annotations

import os
import re
import sys
import time

import pytest

from rr_addon.testing.home import prepare_home, rr_cli
from rr_addon.testing.proxy import ProxyProcess, free_port
from rr_addon.testing.wait import eventually
from tests.e2e.test_rotation import client, metric, sent_bearer, wait_for_bearer

POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {secret}}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials: [{{name: a, auth: api_key, secret: KEY_rot}}]
"""
SCRIPT = """\
import os, sys, time
state = open(sys.argv[1]).read().strip()
print("debug: the secret is", state, file=sys.stderr)  # never logged by rr
if state == "FAIL":
    sys.exit(3)
if state == "HANG":
    open(sys.argv[1] + ".pid", "w").write(str(os.getpid()))
    time.sleep(120)
if state != "EMPTY":
    print(state)
"""
ONE, TWO, THREE, FOUR = "sk_cmd_ONE_4b1e", "sk_cmd_TWO_77aa", "sk_cmd_THREE_0c9d", "sk_cmd_FOUR_e5f0"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, pki):
    home = tmp_path_factory.mktemp("rr-rotate-exec")
    prog = home / "print_secret.py"
    prog.write_text(f"#!{sys.executable}\n" + SCRIPT)
    prog.chmod(0o755)
    state = home / "state"
    state.write_text(ONE)
    # the program path is relative to the YAML file: rr makes it absolute for every data plane
    secret = f"{{command: [./print_secret.py, {state}], timeout: 2, refresh: 1}}"
    prepare_home(home, POLICY.format(port=upstream.port, secret=secret))
    metrics_port = free_port()
    with ProxyProcess(home, upstream_ca=pki.ca_cert, args=["--set", f"rr_metrics_port={metrics_port}"]) as p:
        p.state, p.metrics_port = state, metrics_port
        yield p


def no_value_anywhere(proxy) -> None:
    seen = proxy.log_text() + rr_cli(proxy.home, "secret", "status", "--json").output + rr_cli(proxy.home, "secret", "status").output
    for value in (ONE, TWO, THREE, FOUR):
        assert value not in seen


def test_a_changed_output_is_injected_without_restart_and_the_old_value_stays_masked(proxy, upstream):
    assert sent_bearer(proxy, upstream, "exec-before") == f"Bearer {ONE}"
    proxy.state.write_text(TWO)
    wait_for_bearer(proxy, upstream, TWO)
    upstream.answer("/echo-exec", lambda r: (200, "text/plain", f"old={ONE} new={TWO}".encode()))
    with client(proxy) as c:
        body = c.get(f"https://127.0.0.1:{upstream.port}/echo-exec").text
    assert re.fullmatch(r"old=\[rr:api/live\]\** new=\[rr:api/live\]\**", body), body
    no_value_anywhere(proxy)


def test_a_failing_or_hanging_command_keeps_the_last_good_value(proxy, upstream):
    proxy.state.write_text(THREE)
    wait_for_bearer(proxy, upstream, THREE)
    errors_before = metric(proxy.metrics_port, "rr_secret_source_errors_total")
    proxy.state.write_text("FAIL")
    proxy.wait_for_log("exited with status 3; still using the last good value", timeout=30)
    assert sent_bearer(proxy, upstream, "exec-failing") == f"Bearer {THREE}"
    assert metric(proxy.metrics_port, "rr_secret_source_errors_total") > errors_before
    assert metric(proxy.metrics_port, "rr_secret_source_readable") == 0.0
    proxy.state.write_text("HANG")
    pid_file = proxy.state.with_name("state.pid")
    eventually(pid_file.exists, what="the command run again")
    pid = int(pid_file.read_text())
    eventually(lambda: not os.path.exists(f"/proc/{pid}"), what="the hanging command killed at its 2 s timeout, and reaped")
    assert sent_bearer(proxy, upstream, "exec-hung") == f"Bearer {THREE}"
    proxy.state.write_text(FOUR)
    wait_for_bearer(proxy, upstream, FOUR)
    assert metric(proxy.metrics_port, "rr_secret_source_readable") == 1.0
    assert "debug: the secret is" not in proxy.log_text()
    no_value_anywhere(proxy)


def test_secret_status_shows_the_command(proxy, upstream):
    proxy.state.write_text(ONE)
    wait_for_bearer(proxy, upstream, ONE)
    out = rr_cli(proxy.home, "secret", "status", "--json").output
    import json

    (entry,) = [e for e in json.loads(out)["secrets"] if e["credential"] == "live"]
    assert entry["source"] == f"exec: {proxy.home / 'print_secret.py'} {proxy.state}"
    assert entry["readable"] is True and entry["rotated_at"] is not None and entry["dataplane"]
    no_value_anywhere(proxy)


def test_the_grace_period_survives_moving_the_secret_to_another_source(proxy, upstream):
    """The configuration replaces the command by a watched file: the command's last value
    may still be echoed by the upstream, and stays masked."""
    proxy.state.write_text(TWO)
    wait_for_bearer(proxy, upstream, TWO)
    mounted = proxy.home / "mounted-token"
    mounted.write_text(THREE + "\n")
    policy = proxy.home / "moved.yaml"
    policy.write_text(POLICY.format(port=upstream.port, secret=f"{{file: {mounted}, watch: true}}"))
    rr_cli(proxy.home, "apply", "-f", str(policy))
    wait_for_bearer(proxy, upstream, THREE)
    upstream.answer("/echo-moved", lambda r: (200, "text/plain", f"was={TWO} now={THREE}".encode()))
    with client(proxy) as c:
        body = c.get(f"https://127.0.0.1:{upstream.port}/echo-moved").text
    assert TWO not in body and THREE not in body, body


def test_a_command_written_to_the_database_without_rr_apply_is_never_run(tmp_path, upstream, pki):
    """Write access to the database alone must not make every data plane run a program:
    the stored command is sealed under the master key's digest key. A running data
    plane keeps the stored value; a starting one refuses to start."""
    import json

    from sqlalchemy import create_engine, text

    from rr_addon.testing.home import database_url

    prog = tmp_path / "print_secret.py"
    prog.write_text(f"#!{sys.executable}\n" + SCRIPT)
    prog.chmod(0o755)
    state = tmp_path / "state"
    state.write_text(ONE)
    prepare_home(tmp_path, POLICY.format(port=upstream.port, secret=f"{{command: [{prog}, {state}], timeout: 2, refresh: 1}}"))
    marker = tmp_path / "pwned"
    engine = create_engine(database_url(tmp_path) or f"sqlite:///{tmp_path / 'rr.db'}")
    with engine.connect() as conn:
        (stored,) = conn.execute(text("SELECT secret_source FROM rr_target_credential")).one()
    assert stored.startswith("exec:") and "#" in stored  # sealed by rr apply
    forged = "exec:" + json.dumps({"command": ["/usr/bin/touch", str(marker)], "timeout": 2, "refresh": 1})
    with ProxyProcess(tmp_path, upstream_ca=pki.ca_cert) as p:
        assert sent_bearer(p, upstream, "exec-sealed") == f"Bearer {ONE}"
        for attempt in (forged, forged + stored[stored.rindex("#"):]):  # unsealed, or with another command's seal
            with engine.begin() as conn:
                conn.execute(text("UPDATE rr_target_credential SET secret_source = :s"), {"s": attempt})
                conn.execute(text("UPDATE rr_config_state SET version = version + 1"))  # data planes reload
            p.wait_for_log("not sealed by rr apply", timeout=30)
        state.write_text(TWO)
        time.sleep(3)  # several refresh intervals: a command would have run by now
        assert not marker.exists()
        assert sent_bearer(p, upstream, "exec-forged") == f"Bearer {ONE}"  # the value rr apply stored
    engine.dispose()
    starting = ProxyProcess(tmp_path, upstream_ca=pki.ca_cert, name="restart")
    assert starting.run_to_exit() != 0 and "not sealed by rr apply" in starting.log_text()
    assert not marker.exists()
