"""`rr_addon.mitm.runner`: the master `rr run` builds — rr first, only the mitmproxy
addons the options ask for, and every option, -w and mitmweb still working.

In-process tests build the master with `prepare()` and look at its chain;
the end-to-end ones run `python -m rr_addon.mitm.runner` as a real proxy. Nothing
here is timed."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mitmproxy import exceptions, hooks, options
from mitmproxy.addonmanager import traverse

from rr_addon.mitm import runner
from rr_addon.testing.home import prepare_home
from rr_addon.testing.proxy import ProxyProcess
from rr_addon.testing.wait import eventually_async

UPSTREAM_SECRET = "sk_runner_UPSTREAM_9876"
CALLER_KEY = "KEY_runner_caller"
POLICY = """
targets:
  - name: api
    hosts: ["127.0.0.1:{port}"]
    allow_private_addresses: true
    credentials: [{{name: live, kind: bearer, secret: {up}}}]
proxies:
  - name: agent
    targets: [{{target: api}}]
    credentials: [{{name: main, auth: api_key, secret: {caller}}}]
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory, upstream):
    h = tmp_path_factory.mktemp("rr-runner")
    return prepare_home(h, POLICY.format(port=upstream.port, up=UPSTREAM_SECRET, caller=CALLER_KEY))


@pytest.fixture
def rr_home(home, monkeypatch):
    monkeypatch.setenv("RR_HOME", str(home))
    monkeypatch.delenv("RR_DATABASE_URL", raising=False)
    monkeypatch.delenv("RR_MASTER_KEY", raising=False)
    return home


@pytest.fixture(autouse=True)
def message_typechecks():
    """prepare() may switch mitmproxy's message type checks off for the whole process:
    back on for the next test (rr's other tests build messages under them)."""
    from mitmproxy import http

    from rr_addon.mitm import logfilters

    checks = http.MessageData.__post_init__
    unread = logfilters._STREAMING_FILTER.unread
    yield checks
    http.MessageData.__post_init__ = checks
    logfilters.drop_unread_streaming_lines(unread)  # prepare() sets it for the process, too


def base_args(home: Path) -> list[str]:
    """What `rr run` passes before the user's arguments (less `-s`: rr is an addon here)."""
    return ["--listen-host", "127.0.0.1", "-p", "0", "--set", f"confdir={home / 'certs'}", "--set", "connection_strategy=lazy"]


def build(args: list[str], *, web: bool = False, inspect=None, base=None):
    """prepare() a master, hand it to `inspect` (sync or async), shut it down; returns inspect's result."""

    async def main():
        m = await runner.prepare(args, web=web, base=base)
        try:
            out = inspect(m) if inspect else m
            if asyncio.iscoroutine(out):
                out = await out
            return out
        finally:
            await m.done()

    return asyncio.run(main())


def names(m) -> list[str]:
    return [runner.addon_name(a) for a in m.addons.chain]


# ------------------------------------------------------------------ the chain


def test_default_chain_is_lean_with_rr_where_scripts_go(rr_home):
    chain = build(base_args(rr_home), inspect=names)
    assert chain == ["termlog", "core", "block", "disableh2c", "proxyserver", "rr", "nextlayer", "tlsconfig"]


def test_dropped_addons_stay_registered_and_their_commands_work(rr_home):
    def check(m):
        assert m.addons.get("save") is not None and m.addons.get("save") not in m.addons.chain
        assert m.addons.get("errorcheck") is not None  # the master finds it by name
        assert "export.clip" in m.commands.commands and "cut" in m.commands.commands
        return m.lean.reasons

    reasons = build(base_args(rr_home), inspect=check)
    assert reasons["save"].startswith("dropped:")
    assert reasons["block"] == runner.KEPT["block"]


def test_w_loads_save_after_rr(rr_home, tmp_path):
    chain = build(base_args(rr_home) + ["-w", str(tmp_path / "f.mitm")], inspect=names)
    assert "save" in chain and chain.index("rr") < chain.index("save")


def test_web_keeps_mitmweb_addons_and_rr_before_the_view(rr_home):
    chain = build(base_args(rr_home) + ["--set", "web_open_browser=false", "--set", "web_port=0"], web=True, inspect=names)
    for name in ("webaddon", "webauth", "view", "eventstore", "clientplayback"):
        assert name in chain, name
    assert chain.index("rr") < chain.index("view")


@pytest.mark.parametrize(
    ("extra", "loaded"),
    [
        (["--set", "block_list=/~d example.com/404"], "blocklist"),
        (["--anticache"], "anticache"),
        (["--set", "anticomp=false"], "anticomp"),  # passed explicitly, even with the default value
        (["--modify-headers", "/~q/X-Extra/1"], "modifyheaders"),
        (["--map-remote", "|example.com|example.org"], "mapremote"),
        (["--set", "proxyauth=user:pass"], "proxyauth"),
        (["--set", "upstream_auth=user:pass"], "upstreamauth"),
        (["--set", "hardump=/dev/null"], "savehar"),
        (["--set", "flow_detail=1"], "dumper"),
        (["-v"], "dumper"),
        (["--mode", "reverse:https://example.com"], "updatealtsvc"),
        (["--mode", "regular", "--mode", "dns@53535"], "dnsresolver"),
        (["--mode", "dns@53535"], "stripdnshttpsrecords"),
        (["--set", "dns_name_servers=1.1.1.1"], "dnsresolver"),
        (["~d example.com"], "dumper"),  # a filter expression: flows matching it are printed
    ],
)
def test_options_load_their_addon(rr_home, extra, loaded):
    assert loaded in build(base_args(rr_home) + extra, inspect=names)


def test_quiet_drops_the_dumper(rr_home):
    assert "dumper" not in build(base_args(rr_home) + ["-q", "--set", "flow_detail=2"], inspect=names)


async def scripts_loaded(m) -> None:
    """Until every `-s` script's module is loaded (mitmproxy loads them from a task of its own)."""
    loader = m.addons.get("scriptloader")
    await eventually_async(lambda: loader.addons and all(script.ns is not None for script in loader.addons), what="the scripts loaded")


def test_scripts_load_the_script_loader_and_rr_runs_first(rr_home, tmp_path):
    script = tmp_path / "extra.py"
    script.write_text("class A:\n    def load(self, loader):\n        loader.add_option('extra_opt', str, '', 'x')\naddons = [A()]\n")

    async def check(m):
        await scripts_loaded(m)  # once the loop runs (mitmproxy's script watcher)
        return names(m), m.options.extra_opt, dict(m.options.deferred)

    chain, value, deferred = build(base_args(rr_home) + ["-s", str(script), "--set", "extra_opt=hello"], inspect=check)
    assert value == "hello" and not deferred  # an option a script defines is accepted
    assert chain.index("rr") < chain.index("scriptloader")


def test_message_typechecks_are_off_without_user_scripts(rr_home, message_typechecks):
    from mitmproxy import http

    def wrong_type_accepted(_m) -> bool:
        try:
            http.ResponseData("HTTP/1.1", 200, b"OK", http.Headers(), b"", None, 0.0, None)  # type: ignore[arg-type]
        except TypeError:
            return False
        return True

    assert not wrong_type_accepted(None)  # mitmproxy checks under __debug__
    assert build(base_args(rr_home), inspect=wrong_type_accepted)
    http.MessageData.__post_init__ = message_typechecks


def test_user_scripts_keep_mitmproxys_message_typechecks(rr_home, tmp_path):
    from mitmproxy import http

    script = tmp_path / "extra.py"
    script.write_text("addons = []\n")

    def wrong_type_refused(_m) -> bool:
        with pytest.raises(TypeError, match="http_version"):
            http.ResponseData("HTTP/1.1", 200, b"OK", http.Headers(), b"", None, 0.0, None)  # type: ignore[arg-type]
        return True

    assert build(base_args(rr_home) + ["-s", str(script)], inspect=wrong_type_refused)


def test_rr_script_given_with_s_is_not_loaded_twice(rr_home):
    def check(m):
        loaded = [a for a in traverse(m.addons.chain) if type(a).__name__ == "RR"]
        return len(loaded), m.options.scripts

    count, scripts = build(base_args(rr_home) + ["-s", str(runner.RR_SCRIPT)], inspect=check)
    assert count == 1 and scripts == []


def test_user_options_are_honoured(rr_home):
    def check(m):
        o = m.options
        return o.listen_port, o.listen_host, o.ssl_insecure, o.connection_strategy, o.rr_audit_file

    audit = str(rr_home / "audit.jsonl")
    args = base_args(rr_home) + ["-p", "18123", "--listen-host", "127.0.0.2", "--set", "ssl_insecure=true", "--set", f"rr_audit_file={audit}"]
    assert build(args, inspect=check) == (18123, "127.0.0.2", True, "lazy", audit)


def test_eager_connections_are_refused_with_the_reason(rr_home):
    with pytest.raises(runner.StartupError, match="connection_strategy=eager is not supported by rr: eager connects to the upstream") as e:
        build(["--set", "connection_strategy=eager"], base=runner.defaults(web=False))
    assert e.value.code == 1 and "before rr has decided any request" in e.value.message


def test_eager_connections_set_at_run_time_are_refused_and_rolled_back(rr_home):
    def check(m):
        with pytest.raises(exceptions.OptionsError, match="connection_strategy=eager is not supported"):
            m.options.update(connection_strategy="eager")
        return m.options.connection_strategy

    assert build([], base=runner.defaults(web=False), inspect=check) == "lazy"


def test_without_rrs_defaults_the_addon_still_makes_connections_lazy(rr_home):
    # `mitmdump -s rr_addon/addon.py` starts from mitmproxy's default, eager
    assert build(["-p", "0"], inspect=lambda m: m.options.connection_strategy) == "lazy"


def _option(name):
    return lambda m: getattr(m.options, name)


@pytest.mark.parametrize("web", [False, True], ids=["dump", "web"])
def test_rrs_defaults_apply_when_the_user_gives_none(rr_home, web):
    expected = runner.defaults(web=web)
    assert expected["confdir"] == str(rr_home / "certs")
    got = build([], web=web, base=expected, inspect=lambda m: {k: getattr(m.options, k) for k in expected})
    assert got == expected


# One case per default rr sets: the user's value wins, given the way mitmproxy users give it.
USERS_OPTIONS = [
    pytest.param(False, ["--listen-host", "127.0.0.2"], "listen_host", "127.0.0.2", id="listen_host-flag"),
    pytest.param(False, ["--set", "listen_host=127.0.0.3"], "listen_host", "127.0.0.3", id="listen_host-set"),
    pytest.param(False, ["-p", "18123"], "listen_port", 18123, id="listen_port-flag"),
    pytest.param(False, ["--set", "listen_port=18124"], "listen_port", 18124, id="listen_port-set"),
    pytest.param(False, ["--set", "confdir={tmp}"], "confdir", "{tmp}", id="confdir"),
    pytest.param(False, ["--set", "connection_strategy=lazy"], "connection_strategy", "lazy", id="connection_strategy-lazy"),
    pytest.param(True, ["--set", "web_open_browser=false"], "web_open_browser", False, id="web_open_browser-false"),
    pytest.param(True, ["--set", "web_open_browser=true"], "web_open_browser", True, id="web_open_browser-true"),
    pytest.param(True, ["--set", "web_columns=path", "--set", "web_columns=comment"], "web_columns", ["path", "comment"], id="web_columns"),
]


@pytest.mark.parametrize("web, args, name, value", USERS_OPTIONS)
def test_the_users_options_win_over_rrs_defaults(rr_home, tmp_path, web, args, name, value):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    value = value.replace("{tmp}", str(tmp_path)) if isinstance(value, str) else value
    assert build(args, web=web, base=runner.defaults(web=web), inspect=_option(name)) == value


def test_confdir_config_yaml_wins_over_rrs_defaults(rr_home, tmp_path):
    (tmp_path / "config.yaml").write_text("listen_port: 18125\n")
    assert build(["--set", f"confdir={tmp_path}"], base=runner.defaults(web=False), inspect=_option("listen_port")) == 18125


@pytest.mark.parametrize(
    "web, args, expected",
    [
        (False, [], "127.0.0.1:8080"),
        (False, ["-p", "28080"], "127.0.0.1:28080"),
        (False, ["--listen-port", "28081", "--listen-host", "0.0.0.0"], "127.0.0.1:28081"),  # all interfaces: reached on loopback
        (False, ["--set", "listen_port=28082"], "127.0.0.1:28082"),
        (False, ["--mode", "regular@28083"], "127.0.0.1:28083"),
        (True, ["-p", "28084", "--set", "web_port=28085"], "127.0.0.1:28084"),
        (False, ["--listen-host", "::1", "-p", "28086"], "[::1]:28086"),
    ],
)
def test_where_tells_the_address_the_proxy_will_listen_on(rr_home, web, args, expected):
    assert runner.where(args, web=web).address == expected


def test_where_tells_the_ca_of_the_confdir_in_use(rr_home, tmp_path):
    assert runner.where([], web=False).ca == rr_home / "certs" / "mitmproxy-ca-cert.pem"
    assert runner.where(["--set", f"confdir={tmp_path}"], web=False).ca == tmp_path / "mitmproxy-ca-cert.pem"


def test_an_unknown_option_next_to_scripts_stops_the_start(rr_home, tmp_path, caplog):
    script = tmp_path / "empty.py"
    script.write_text("addons = []\n")

    async def check(m):
        await scripts_loaded(m)
        with caplog.at_level(logging.ERROR, logger="rr.runner"):
            await m.running()

    build(base_args(rr_home) + ["-s", str(script), "--set", "no_such_option=1"], inspect=check)
    # logged at ERROR during start: mitmproxy's errorcheck then exits 1 (see the e2e test below)
    assert [r.getMessage() for r in caplog.records if r.name == "rr.runner" and r.levelno == logging.ERROR] == ["Unknown option(s): no_such_option"]


def test_unknown_option_is_an_error(rr_home):
    # Deliberately stricter than mitmdump 12, which ignores an unknown --set silently.
    with pytest.raises(runner.StartupError, match="Unknown option\\(s\\): block_globl") as e:
        build(base_args(rr_home) + ["--set", "block_globl=false"])
    assert e.value.code == 1


def test_bad_option_value_is_an_error_like_mitmdump(rr_home):
    with pytest.raises(runner.StartupError, match="Failed to parse option flow_detail") as e:
        build(base_args(rr_home) + ["--set", "flow_detail=abc"])
    assert e.value.code == 1


def test_unknown_flag_is_an_error(rr_home, capsys):
    with pytest.raises(runner.StartupError) as e:
        build(base_args(rr_home) + ["--no-such-flag"])
    assert e.value.code == 1
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_broken_configuration_stops_the_start_with_rrs_message(tmp_path, monkeypatch):
    monkeypatch.setenv("RR_HOME", str(tmp_path))
    monkeypatch.setenv("RR_DATABASE_URL", f"sqlite:///{tmp_path}/missing/rr.db")
    with pytest.raises(runner.StartupError, match="rr: ") as e:
        build(base_args(tmp_path))
    assert e.value.code == 1


def test_options_dump_lists_rr_and_dropped_addons_options(rr_home, capsys):
    with pytest.raises(runner.StartupError) as e:
        build(base_args(rr_home) + ["--options"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "rr_database_url" in out and "block_list" in out and "save_stream_file" in out


def test_every_option_belongs_to_an_addon_or_mitmproxys_core(rr_home):
    def check(m):
        declared = set()
        for a in m.lean.full:
            declared |= runner.declared_options(a)
        return set(m.options.keys()) - declared

    leftover = build(base_args(rr_home), inspect=check)
    assert leftover <= set(options.Options().keys())


# ------------------------------------------------------------------ run-time changes


def test_an_option_set_at_run_time_wakes_its_addon_in_place(rr_home):
    def check(m):
        m.lean.running = False
        assert "anticache" not in names(m)
        m.options.update(anticache=True)
        chain = names(m)
        assert "anticache" in chain
        assert chain == [runner.addon_name(a) for a in m.lean.full if runner.addon_name(a) in chain]  # mitmproxy's order
        return chain

    build(base_args(rr_home), inspect=check)


def test_fast_dispatch_passes_each_hooks_arguments_as_hook_args_does(rr_home):
    """FastDispatch reads a hook's fields by name, cached per class, instead of
    `Hook.args()` (dataclasses.fields() per event): the same values in the same
    order for every hook mitmproxy defines, and a class with its own `args()` keeps it."""
    import dataclasses

    def check(m):
        fast = m.addons.trigger_event
        for cls in set(hooks.all_hooks.values()):
            values = {f.name: object() for f in dataclasses.fields(cls)}
            event = cls(**values)
            assert fast._args(event) == event.args(), cls.__name__
            assert fast._args(event) == [values[f.name] for f in dataclasses.fields(cls)]

        @dataclasses.dataclass
        class Custom(hooks.Hook):
            a: int

            def args(self):
                return ["own", self.a]

        assert fast._args(Custom(1)) == ["own", 1]
        return len(hooks.all_hooks)

    assert build(base_args(rr_home), inspect=check) > 20


def _streaming_line_seen(m) -> list[int]:
    """Levels at which a handler on the root logger sees mitmproxy's per-flow streaming line."""
    seen: list[int] = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("Streaming response from"):
                assert record.funcName == "_streaming_line_seen"  # rr's shortcut does not pose as the caller
                seen.append(record.levelno)

    catch = Catch(logging.DEBUG)
    logging.getLogger().addHandler(catch)
    try:
        logging.getLogger("mitmproxy.proxy.server").info("Streaming response from example.com.")
    finally:
        logging.getLogger().removeHandler(catch)
    return seen


def test_streaming_line_is_dropped_only_when_nothing_shows_debug(rr_home):
    """rr streams every response, so mitmproxy logs one "Streaming response from …"
    line per request; rr makes it DEBUG, and under `rr run` drops it before the
    handlers whenever no one would show a DEBUG record."""
    assert build(base_args(rr_home), inspect=_streaming_line_seen) == []

    def other_lines(m):
        seen: list[str] = []

        class Catch(logging.Handler):
            def emit(self, record):
                seen.append(f"{record.levelname} {record.getMessage()} {record.funcName}")

        catch = Catch(logging.DEBUG)
        logging.getLogger().addHandler(catch)
        try:
            log = logging.getLogger("mitmproxy.proxy.server")
            log.info("client connect")
            log.info("Streaming request to example.com.")
            log.warning("Streaming response from example.com. (not the routine line)")
        finally:
            logging.getLogger().removeHandler(catch)
        return seen

    assert build(base_args(rr_home), inspect=other_lines) == [
        "INFO client connect other_lines",
        "WARNING Streaming response from example.com. (not the routine line) other_lines",
    ]
    # the terminal shows DEBUG: the line is there, as DEBUG
    assert build(base_args(rr_home) + ["--set", "termlog_verbosity=debug"], inspect=_streaming_line_seen) == [logging.DEBUG]

    def set_at_run_time(m):
        m.options.update(termlog_verbosity="debug")
        return _streaming_line_seen(m)

    assert build(base_args(rr_home), inspect=set_at_run_time) == [logging.DEBUG]

    def add_log_reader(m):  # e.g. a script's add_log hook, or a newer mitmproxy's addon
        class Reader:
            def add_log(self, entry):
                pass

        m.addons.chain = [*m.addons.chain, Reader()]
        try:
            return _streaming_line_seen(m)
        finally:
            m.addons.chain = list(m.lean.full)

    assert build(base_args(rr_home), inspect=add_log_reader) == [logging.DEBUG]
    # mitmweb's event log shows DEBUG records
    assert build(base_args(rr_home) + ["--set", "web_open_browser=false", "--set", "web_port=0"], web=True, inspect=_streaming_line_seen) == [logging.DEBUG]


def test_mitmweb_intercept_set_at_run_time_is_configured(rr_home):
    def check(m):
        assert "intercept" not in names(m)
        m.options.update(intercept="~q")
        intercept = m.addons.get("intercept")
        assert intercept in m.addons.chain
        assert intercept.filt is not None  # configured with the filter it was given
        assert names(m).index("rr") < names(m).index("intercept") < names(m).index("view")

    build(base_args(rr_home) + ["--set", "web_open_browser=false", "--set", "web_port=0"], web=True, inspect=check)


def test_a_script_added_at_run_time_is_loaded_and_started(rr_home, tmp_path):
    script = tmp_path / "late.py"
    script.write_text("class Late:\n    started = False\n    def running(self):\n        Late.started = True\naddons = [Late()]\n")

    async def check(m):
        m.lean.running = True  # as if the master were running
        m.options.update(scripts=[str(script)])
        loader = m.addons.get("scriptloader")
        assert loader in m.addons.chain and loader.is_running
        await scripts_loaded(m)  # mitmproxy's script watcher loads it
        late = [a for a in traverse([loader]) if type(a).__name__ == "Late"]
        assert late and type(late[0]).started

    build(base_args(rr_home), inspect=check)


def test_a_bad_run_time_value_is_refused_and_rolled_back(rr_home):
    def check(m):
        with pytest.raises(exceptions.OptionsError):
            m.options.update(block_list=["not-a-spec"])
        return m.options.block_list

    assert build(base_args(rr_home), inspect=check) == []


# ------------------------------------------------------------------ dispatch


class Recorder:
    def __init__(self, name: str, calls: list, fail: bool = False, halt: bool = False, is_async: bool = False):
        self.name, self.calls, self.fail, self.halt = name, calls, fail, halt
        if is_async:

            async def requestheaders(flow):
                await asyncio.sleep(0)
                self.calls.append(self.name)

            self.requestheaders = requestheaders

    def requestheaders(self, flow):
        self.calls.append(self.name)
        if self.fail:
            raise ValueError(f"{self.name} failed")
        if self.halt:
            raise exceptions.AddonHalt()


class Container:
    def __init__(self, name: str, addons: list):
        self.name, self.addons = name, addons


def test_fast_dispatch_keeps_mitmproxys_semantics(rr_home, caplog):
    from mitmproxy.proxy.layers.http import HttpRequestHeadersHook
    from mitmproxy.test import tflow

    async def check(m):
        calls: list[str] = []
        inner = [Recorder("inner", calls)]
        m.addons.chain = [
            Recorder("a", calls),
            Recorder("b", calls, fail=True),
            Recorder("c", calls, is_async=True),
            Container("box", inner),
            Recorder("d", calls, halt=True),
            Recorder("e", calls),
        ]
        assert isinstance(m.addons.trigger_event, runner.FastDispatch)
        with caplog.at_level(logging.ERROR):
            await m.addons.trigger_event(HttpRequestHeadersHook(tflow.tflow()))
        assert calls == ["a", "b", "c", "inner", "d"]  # b's error is logged, d halts the event
        assert "Addon error: b failed" in caplog.text
        inner.append(Recorder("late", calls))  # a container's tree changes: seen at once
        m.addons.chain.append(Recorder("f", calls))  # the chain grows: the cache is rebuilt
        calls.clear()
        await m.addons.trigger_event(hooks.UpdateHook([]))  # nobody implements it: nothing runs
        await m.addons.trigger_event(HttpRequestHeadersHook(tflow.tflow()))
        assert calls == ["a", "b", "c", "inner", "late", "d"]
        m.addons.chain = list(m.lean.full)

    build(base_args(rr_home), inspect=check)


# ------------------------------------------------------------------ real processes


def runner_process(home: Path, pki, *, args: list[str] = (), web: bool = False) -> ProxyProcess:
    """A ProxyProcess that runs `python -m rr_addon.mitm.runner` with what `rr run` passes."""
    p = ProxyProcess(home, upstream_ca=pki.ca_cert, args=list(args), web=web, name="runner")
    rest = p.cmd[p.cmd.index("run") + 1 :]
    p.cmd = [sys.executable, "-m", "rr_addon.mitm.runner", *rest, "--listen-host", "127.0.0.1", "--set", f"confdir={home / 'certs'}", "--set", "connection_strategy=lazy"]
    return p


def call(proxy: ProxyProcess, upstream, path: str = "/anything/runner") -> httpx.Response:
    with httpx.Client(proxy=proxy.url("agent", CALLER_KEY), verify=ssl.create_default_context(cafile=str(proxy.ca)), timeout=20) as c:
        return c.get(f"https://127.0.0.1:{upstream.port}{path}")


@pytest.mark.e2e
def test_runner_proxies_and_w_writes_what_rr_put_on_the_flow(home, pki, upstream, tmp_path):
    from mitmproxy import io as mio
    from mitmproxy.http import HTTPFlow

    dump = tmp_path / "flows.mitm"
    with runner_process(home, pki, args=["-w", str(dump)]) as p:
        r = call(p, upstream, "/anything/runner-w")
        assert r.status_code == 200, r.text
        assert r.headers["rr-request-id"]
        assert UPSTREAM_SECRET not in r.text  # an echoed secret is masked
    got = [x for x in upstream.received if x.path == "/anything/runner-w"]
    assert got and got[0].header("Authorization") == f"Bearer {UPSTREAM_SECRET}"  # rr injected it on the wire
    assert p.proc is not None and p.proc.returncode == 0
    with dump.open("rb") as f:
        flows = [f for f in mio.FlowReader(f).stream() if isinstance(f, HTTPFlow)]
    assert flows and flows[0].request.headers["Authorization"] == "Bearer [rr:api/live]"
    assert flows[0].response is not None and flows[0].response.headers["rr-request-id"] == r.headers["rr-request-id"]
    raw = dump.read_bytes()
    assert UPSTREAM_SECRET.encode() not in raw and CALLER_KEY.encode() not in raw


@pytest.mark.e2e
def test_runner_web_serves_mitmweb_with_rrs_flows(home, pki, upstream):
    with runner_process(home, pki, web=True, args=["--set", "web_open_browser=false"]) as p:
        r = call(p, upstream, "/anything/web")
        assert r.status_code == 200
        flows = httpx.get(f"http://127.0.0.1:{p.web_port}/flows", headers={"Authorization": "Bearer rr-test-password"}, timeout=10)
        assert flows.status_code == 200
        seen = [f for f in flows.json() if f["request"]["path"] == "/anything/web"]
        assert seen and seen[0]["comment"].startswith("rr allow")
        assert UPSTREAM_SECRET not in flows.text and CALLER_KEY not in flows.text


@pytest.mark.e2e
@pytest.mark.parametrize("with_script", [False, True], ids=["plain", "with-script"])
def test_runner_unknown_option_exits_1_with_the_reason(home, pki, tmp_path, with_script):
    args = ["--set", "no_such_option=1"]
    if with_script:
        (tmp_path / "s.py").write_text("addons = []\n")
        args += ["-s", str(tmp_path / "s.py")]
    p = runner_process(home, pki, args=args)
    out = subprocess.run(p.cmd, env=p.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "Unknown option(s): no_such_option" in out.stdout + out.stderr
