"""How `rr run` builds and runs the mitmproxy master: rr first, then only the
mitmproxy addons the options ask for, dispatched without per-addon overhead.

    run(args, web=False) -> exit status      # what `rr run [--web] …` calls
    python -m rr_addon.mitm.runner [--web] [mitmdump/mitmweb arguments…]

mitmproxy hands every hook (and the `update` that follows each flow hook) to
every addon in its chain, whether or not the addon implements it; with the
default ~36 addons that dispatch is a third of the proxy's CPU per request.
`run()` builds the master `mitmdump`/`mitmweb` would (every addon registered,
so every option, command and `--options` entry exists as in mitmproxy),
parses the command line as mitmproxy does, and then keeps in the hook chain

- the addons a proxy needs (`KEPT`: termlog, core, block, disableh2c,
  proxyserver, nextlayer, tlsconfig, rr, and mitmweb's own) and any addon
  this module does not know (a newer mitmproxy's): kept, to be safe;
- a droppable addon (`DROPPABLE`) only when asked for: the user passed one of
  its options (command line, `--set`, confdir/config.yaml — even with the
  default value) or one differs from its default (`-w` sets save_stream_file:
  Save is loaded), or its trigger holds (a DNS-capable mode loads the DNS
  addons, a reverse mode UpdateAltSvc, mitmweb the replay addon, …). Per-flow
  printing (Dumper) is such an addon: rr's audit trail is the per-request
  record, and `-v`, `--flow-detail N` or `--set flow_detail=N` bring it back.

The others stay registered but dormant: their commands work and
`master.addons.get()` finds them. An option of a dormant addon set at run time
(mitmweb's options editor, the `set` command) brings the addon into the chain,
at its original place, before the chain is configured.

Hooks are then dispatched by `FastDispatch`: only to the addons that implement
them, with mitmproxy's semantics.

rr is a real addon object, not a `-s` script: it sits where `mitmdump -s
rr_addon/addon.py` puts it (right before the script loader, so before Save and
mitmweb's View: what rr changes is what `-w` and mitmweb show), and a broken
rr or configuration stops the process at start with rr's message.

Without user scripts (`-s`), mitmproxy's debug-mode type check of every
request and response it builds is off (`rr_addon.mitm.patches.skip_message_typechecks`).
Immutable option values are read without deep copies
(`patches.read_options_without_copies`), and mitmproxy's per-flow "Streaming
response from …" line is not logged while nothing would show it
(`logfilters.drop_unread_streaming_lines`, `FastDispatch.unread_debug`).

rr's defaults (`defaults()`: listen on 127.0.0.1:8080, confdir `$RR_HOME/certs`,
lazy connections, mitmweb without opening a browser and with rr's columns) are
applied before the command line, so every option the user passes wins —
except `connection_strategy=eager`, which is refused (see `LAZY_ONLY`).

Deliberate differences from mitmdump: `--set` of an option that nothing
defines is an error (mitmdump ignores it silently, so a typo such as
`block_globl=false` would go unnoticed), and `rr_addon/addon.py` given with
`-s` is ignored (rr is already loaded).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import logging
import os
import signal
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from mitmproxy import exceptions, hooks, master, optmanager
from mitmproxy import options as mitm_options
from mitmproxy.addonmanager import safecall, traverse
from mitmproxy.proxy import mode_specs

from rr_addon.mitm import logfilters, patches
from rr_addon.mitm.options import LAZY_ONLY

logger = logging.getLogger("rr.runner")

RR_SCRIPT = Path(__file__).resolve().parent.parent / "addon.py"


# The columns of mitmweb's flow list under rr: rr's decision is the flow comment.
WEB_COLUMNS = ("tls", "icon", "path", "method", "status", "size", "time", "comment")


def defaults(*, web: bool) -> dict[str, Any]:
    """The option values rr starts from; the user's command line and confdir/config.yaml override them."""
    from rr_addon import settings

    values: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "listen_port": 8080,
        "confdir": str(settings.confdir()),
        "connection_strategy": "lazy",
    }
    if web:
        values.update(web_open_browser=False, web_columns=list(WEB_COLUMNS))
    return values


# Addons always kept in the chain, and why (anything unknown is kept as well).
KEPT = {
    "termlog": "prints the log",
    "core": "validates options at run time; core commands",
    "block": "security: block_global / block_private refuse clients from public or private addresses",
    "disableh2c": "correctness: strips h2c upgrade headers and kills HTTP/2 prior-knowledge requests on cleartext",
    "proxyserver": "the proxy servers",
    "nextlayer": "protocol detection",
    "tlsconfig": "certificates and TLS settings",
    "rr": "rr",
    "webaddon": "mitmweb options",
    "webauth": "mitmweb authentication",
    "view": "mitmweb's flow list",
    "eventstore": "mitmweb's event log",
}

# Dormant addons whose `done` still runs at shutdown: they may hold resources
# started through a command that works while dormant.
DONE_WHEN_DORMANT = ("browser",)

# Reverse-proxy schemes that carry no DNS (dns, udp and tcp ones may).
_HTTP_REVERSE_SCHEMES = ("http", "https", "http3", "tls", "dtls", "quic")


@dataclass
class Asked:
    """What the user asks for: option values, and the option names they passed
    (command line, confdir/config.yaml, and later run-time changes such as
    mitmweb's options editor) even when the value equals the default."""

    options: optmanager.OptManager
    web: bool
    given: set[str]

    def set(self, name: str) -> bool:
        return name in self.given or (name in self.options and self.options.has_changed(name))

    def modes(self) -> list[mode_specs.ProxyMode]:
        modes = []
        for spec in self.options.mode:
            try:
                modes.append(mode_specs.ProxyMode.parse(spec))
            except ValueError:
                pass  # proxyserver reports the bad spec
        return modes


Trigger = Callable[[Asked, frozenset[str]], "str | None"]  # (what is asked, the addon's own options) -> reason


def _own_options(asked: Asked, own: frozenset[str]) -> str | None:
    for n in sorted(own):
        if asked.set(n):
            return f"option {n} is set"
    return None


def _dns_mode(asked: Asked, own: frozenset[str]) -> str | None:
    for m in asked.modes():
        if isinstance(m, (mode_specs.RegularMode, mode_specs.UpstreamMode, mode_specs.Socks5Mode)):
            continue
        if isinstance(m, mode_specs.ReverseMode) and m.scheme in _HTTP_REVERSE_SCHEMES:
            continue
        return f"mode {m.full_spec} can carry DNS"
    return _own_options(asked, own)


def _reverse_mode(asked: Asked, own: frozenset[str]) -> str | None:
    for m in asked.modes():
        if isinstance(m, mode_specs.ReverseMode):
            return f"mode {m.full_spec} is a reverse proxy"
    return _own_options(asked, own)


def _replay(asked: Asked, own: frozenset[str]) -> str | None:
    if asked.web:
        return "mitmweb's replay button"
    if asked.options.scripts:
        return "scripts may call replay.client"
    return _own_options(asked, own)


def _keepserving(asked: Asked, own: frozenset[str]) -> str | None:
    for n in ("rfile", "client_replay", "server_replay"):
        if asked.options.has_changed(n):
            return f"option {n} is set"
    return _own_options(asked, own)


def _dumper(asked: Asked, own: frozenset[str]) -> str | None:
    """Flows are printed when the user asks for them (-v, --flow-detail, --set
    flow_detail=N, a filter expression); rr's audit trail is the per-request record."""
    if asked.options.flow_detail <= 0:
        return None
    return _own_options(asked, own)


@dataclass(frozen=True)
class Droppable:
    """A mitmproxy addon rr leaves out of the hook chain unless asked for."""

    why: str  # why a governance proxy does not need it by default
    trigger: Trigger = _own_options  # when it is needed after all


DROPPABLE: dict[str, Droppable] = {
    "browser": Droppable("only provides the browser.start command (still available); no flow hooks"),
    "stripdnshttpsrecords": Droppable("only acts on DNS responses; loaded for DNS-capable modes", _dns_mode),
    "blocklist": Droppable("no-op until block_list is set"),
    "anticache": Droppable("no-op until anticache is set"),
    "anticomp": Droppable("no-op until anticomp is set"),
    "clientplayback": Droppable("replays flows only when asked to (client_replay; loaded for mitmweb's replay button and with scripts)", _replay),
    "commandhistory": Droppable("command history of the mitmproxy console UI"),
    "comment": Droppable("only the flow.comment command (still available); no hooks"),
    "cut": Droppable("only the cut.* commands (still available); no hooks"),
    "export": Droppable("only the export.* commands (still available); no hooks"),
    "onboarding": Droppable("serves mitm.it, which rr answers itself (not a target) before onboarding's request hook runs"),
    "proxyauth": Droppable("mitmproxy's own proxy authentication, no-op until proxyauth is set; rr authenticates callers"),
    "scriptloader": Droppable("no-op until scripts are given (-s)"),
    "dnsresolver": Droppable("resolves DNS only in dns and wireguard modes; loaded for DNS-capable modes", _dns_mode),
    "serverplayback": Droppable("no-op until server_replay is set"),
    "mapremote": Droppable("no-op until map_remote is set"),
    "maplocal": Droppable("no-op until map_local is set"),
    "modifybody": Droppable("no-op until modify_body is set"),
    "modifyheaders": Droppable("no-op until modify_headers is set"),
    "stickyauth": Droppable("no-op until stickyauth is set"),
    "stickycookie": Droppable("no-op until stickycookie is set"),
    "save": Droppable("no-op until save_stream_file (-w) is set"),
    "savehar": Droppable("no-op until hardump is set"),
    "upstreamauth": Droppable("no-op until upstream_auth is set"),
    "updatealtsvc": Droppable("rewrites Alt-Svc only in reverse mode; loaded for reverse modes", _reverse_mode),
    "dumper": Droppable("prints each flow; loaded when flow output is asked for (-v, --flow-detail N, --set flow_detail=N)", _dumper),
    "keepserving": Droppable("only matters with rfile, client_replay or server_replay", _keepserving),
    "readfilestdin": Droppable("no-op until rfile (-r) is set"),
    "errorcheck": Droppable("has no hooks: the master finds it by name, so it still stops a failed start"),
    "intercept": Droppable("no-op until intercept is set (mitmweb's intercept box sets it, and the addon joins)"),
    "staticviewer": Droppable("no-op until web_static_viewer is set"),
}


def addon_name(addon: object) -> str:
    return getattr(addon, "name", type(addon).__name__.lower())


class _OptionRecorder:
    """A Loader stand-in that records the options an addon declares."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def add_option(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.names.add(name)

    def add_command(self, *args: Any, **kwargs: Any) -> None:
        pass


def declared_options(addon: object) -> frozenset[str]:
    """The options `addon` (and its sub-addons) declare in `load()`.

    mitmproxy's default addons only call `loader.add_option` there, so calling
    `load` again with a recorder is side-effect free."""
    rec = _OptionRecorder()
    for a in traverse([addon]):
        load = getattr(a, "load", None)
        if callable(load) and not inspect.iscoroutinefunction(load):
            load(rec)
    return frozenset(rec.names)


class StartupError(Exception):
    """The process must exit with `code` after printing the message (if any)."""

    def __init__(self, message: str | None, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code


class LeanChain:
    """Which addons of a master are in the hook chain, and why."""

    def __init__(self, m: master.Master, full: list, asked: Asked):
        self.master = m
        self.full = full  # every addon in chain order, as mitmproxy (plus rr) would have it
        self.asked = asked
        self.running = False
        self._options = {id(a): declared_options(a) for a in full if addon_name(a) in DROPPABLE}
        self.reasons: dict[str, str] = {}

    def wanted(self, addon: object) -> str | None:
        """Why `addon` belongs in the chain now, or None."""
        name = addon_name(addon)
        rule = DROPPABLE.get(name)
        if rule is None:
            return KEPT.get(name, "not known to rr's runner: kept")
        return rule.trigger(self.asked, self._options.get(id(addon), frozenset()))

    def dormant(self) -> list:
        chain = {id(a) for a in self.master.addons.chain}
        return [a for a in self.full if id(a) not in chain]

    def apply(self) -> None:
        """Set the chain from the current options (at start)."""
        keep = []
        for a in self.full:
            reason = self.wanted(a)
            self.reasons[addon_name(a)] = reason or f"dropped: {DROPPABLE[addon_name(a)].why}"
            if reason:
                keep.append(a)
        self.master.addons.chain = keep
        logger.debug(
            "rr runner: %d of %d addons in the hook chain; dormant: %s",
            len(keep),
            len(self.full),
            ", ".join(addon_name(a) for a in self.dormant()) or "none",
        )

    def options_changed(self, updated: set[str]) -> None:
        """Options receiver that runs before the addon manager's: wake dormant
        addons that the change asks for, then let everything be configured."""
        self.asked.given |= updated
        woken = []
        for a in self.dormant():
            reason = self.wanted(a)
            if reason:
                self.reasons[addon_name(a)] = reason
                woken.append(a)
        if woken:
            chain = {id(a) for a in self.master.addons.chain} | {id(a) for a in woken}
            self.master.addons.chain = [a for a in self.full if id(a) in chain]
            for a in woken:
                logger.info("rr: loading mitmproxy addon %s (%s)", addon_name(a), self.reasons[addon_name(a)])
                if self.running:
                    self._start(a)
                # What it missed while dormant; `updated` follows from the addon manager.
                missed = set(self._options.get(id(a), ())) - set(updated)
                if missed:
                    self.master.addons.invoke_addon_sync(a, hooks.ConfigureHook(missed))
        self.master.addons._configure_all(updated)

    def _start(self, addon: object) -> None:
        for a in traverse([addon]):
            func = getattr(a, "running", None)
            if not callable(func):
                continue
            if inspect.iscoroutinefunction(func):
                asyncio.get_running_loop().create_task(func(), name=f"{addon_name(a)}.running")
            else:
                func()

    async def done_dormant(self) -> None:
        for a in self.dormant():
            if addon_name(a) in DONE_WHEN_DORMANT:
                try:
                    await self.master.addons.invoke_addon(a, hooks.DoneHook())
                except Exception:
                    logger.exception("rr: %s done hook failed", addon_name(a))


class FastDispatch:
    """`AddonManager.trigger_event` without the per-addon generator machinery.

    mitmproxy dispatches every hook (and the `update` after each flow hook) by
    walking each chain addon's tree with generators inside a `contextlib`
    context manager, whether or not the addon has the hook: ~4 µs per addon
    per event here. This keeps, per hook name, the bound handlers of the
    chain's leaf addons and calls only those, in chain order, with the same
    semantics: an exception is logged by mitmproxy's `safecall` (same message
    and traceback) and the next addon runs, `AddonHalt` stops the event,
    `OptionsError` propagates, awaitables are awaited. Addons that contain
    others (the script loader, scripts) are dispatched the original way, as
    their trees change at run time. The cache is rebuilt when the chain
    changes (a new list or a different length)."""

    __slots__ = ("manager", "_plans", "_chain", "_length", "_fields")

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self._plans: dict[str, tuple[tuple[object, Callable | None], ...]] = {}
        self._chain: list | None = None
        self._length = -1
        self._fields: dict[type, tuple[str, ...] | None] = {}  # a hook class's fields, in `Hook.args` order

    def _args(self, event: hooks.Hook) -> list[Any]:
        # `Hook.args` calls dataclasses.fields() on every event (~17 per request)
        cls = type(event)
        try:
            names = self._fields[cls]
        except KeyError:
            names = self._fields[cls] = tuple(f.name for f in dataclasses.fields(event)) if cls.args is hooks.Hook.args else None
        if names is None:
            return event.args()
        return [getattr(event, n) for n in names]

    def unread_debug(self) -> bool:
        """Whether no DEBUG record would be shown now (outside mitmweb): the
        terminal log is above DEBUG and nothing in the chain receives `add_log`
        (a container — scripts — might)."""
        return self.manager.master.options.termlog_verbosity != "debug" and not self._plan("add_log")

    def _plan(self, name: str) -> tuple[tuple[object, Callable | None], ...]:
        chain = self.manager.chain
        if chain is not self._chain or len(chain) != self._length:
            self._plans.clear()
            self._chain, self._length = chain, len(chain)
        plan = self._plans.get(name)
        if plan is None:
            entries: list[tuple[object, Callable | None]] = []
            for a in chain:
                if hasattr(a, "addons"):
                    entries.append((a, None))  # a container: its tree may change
                    continue
                func = getattr(a, name, None)
                if func is None or isinstance(func, types.ModuleType):
                    continue
                entries.append((a, func))  # not callable: invoke_addon raises the same AddonManagerError on use
            plan = self._plans[name] = tuple(entries)
        return plan

    async def __call__(self, event: hooks.Hook) -> None:
        args = self._args(event)
        invoke = self.manager.invoke_addon
        for addon, func in self._plan(event.name):
            try:
                if func is None or not callable(func):
                    await invoke(addon, event)
                else:
                    res = func(*args)
                    if res is not None and inspect.isawaitable(res):
                        await res
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception:
                with safecall():
                    raise


def unknown_options(opts: optmanager.OptManager) -> str:
    return f"Unknown option(s): {', '.join(sorted(opts.deferred))}"


class _LeanMaster:
    """Mixed into DumpMaster / WebMaster: tells the chain when the master runs and stops."""

    lean: LeanChain

    async def running(self) -> None:
        self.lean.running = True
        if self.options.deferred:  # type: ignore[attr-defined]
            # Not defined by rr, mitmproxy or any script (loaded by now): the
            # error stops the start (errorcheck runs right after this hook).
            logger.error(unknown_options(self.options))  # type: ignore[attr-defined]
        await super().running()  # type: ignore[misc]

    async def done(self) -> None:
        await self.lean.done_dormant()
        await super().done()  # type: ignore[misc]


def _master_class(web: bool) -> type[master.Master]:
    if web:
        from mitmproxy.tools.web.master import WebMaster

        return type("RRWebMaster", (_LeanMaster, WebMaster), {})
    from mitmproxy.tools.dump import DumpMaster

    return type("RRDumpMaster", (_LeanMaster, DumpMaster), {})


def _is_rr_script(spec: str) -> bool:
    try:
        return Path(os.path.expanduser(spec)).resolve() == RR_SCRIPT
    except OSError:
        return False


def _drop_rr_script(args: argparse.Namespace) -> None:
    """rr is loaded as an addon; `-s rr_addon/addon.py` (what `rr run` used to pass) would load it twice."""
    if getattr(args, "scripts", None):
        args.scripts = [s for s in args.scripts if not _is_rr_script(s)] or None
    args.setoptions = [s for s in args.setoptions if not (s.startswith("scripts=") and _is_rr_script(s[len("scripts=") :]))]


async def prepare(arguments: Iterable[str], *, web: bool, base: dict[str, Any] | None = None) -> master.Master:
    """Build, configure and trim the master for these command-line arguments,
    as `mitmproxy.tools.main.run` does up to `master.run()`, starting from the
    option values `base` (rr's `defaults()`; the arguments override them).
    Raises StartupError when the process must exit instead."""
    from mitmproxy.tools import cmdline
    from mitmproxy.tools.main import process_options
    from mitmproxy.utils import arg_check, debug

    from rr_addon.addon import RR

    logging.getLogger().setLevel(logging.DEBUG)
    for name, level in (("tornado", logging.WARNING), ("asyncio", logging.WARNING), ("hpack", logging.WARNING), ("urwid", logging.INFO), ("quic", logging.WARNING)):
        logging.getLogger(name).setLevel(level)
    debug.register_info_dumpers()

    opts = mitm_options.Options()
    m = _master_class(web)(opts)
    rr = RR()
    # Registered (options, commands, lookup) but outside the chain while the
    # command line is applied: rr is configured once, with every option, below.
    m.addons.register(rr)
    chain = list(m.addons.chain)
    loader = m.addons.get("scriptloader")
    at = next((i for i, a in enumerate(chain) if a is loader), len(chain))
    full = chain[:at] + [rr] + chain[at:]

    parser = (cmdline.mitmweb if web else cmdline.mitmdump)(opts)
    try:
        args = parser.parse_args(list(arguments))
    except SystemExit:
        arg_check.check()
        raise StartupError(None, 1) from None
    _drop_rr_script(args)

    given = {spec.partition("=")[0] for spec in args.setoptions}
    try:
        if base:
            opts.update(**base)
        opts.set(*args.setoptions, defer=True)
        for path in (Path(opts.confdir).expanduser() / "config.yaml", Path(opts.confdir).expanduser() / "config.yml"):
            if path.is_file():
                given |= set(optmanager.parse(path.read_text(encoding="utf8", errors="replace")) or ())
        optmanager.load_paths(opts, os.path.join(opts.confdir, "config.yaml"), os.path.join(opts.confdir, "config.yml"))
        process_options(parser, opts, args)
        given |= {k for k, v in vars(args).items() if k in opts and v is not None}
        if args.options:
            optmanager.dump_defaults(opts, sys.stdout)
            raise StartupError(None, 0)
        if args.commands:
            m.commands.dump()
            raise StartupError(None, 0)
        if not web and args.filter_args:
            v = " ".join(args.filter_args)
            logging.info(f'Only processing flows that match "{v}"')
            opts.update(save_stream_filter=v, readfile_filter=v, dumper_filter=v)
            given |= {"save_stream_filter", "readfile_filter", "dumper_filter"}
        if opts.deferred and not opts.scripts:
            # (Scripts load once the loop runs and may define them: checked then, in `running`.)
            raise exceptions.OptionsError(unknown_options(opts))
        if any(_is_rr_script(s) for s in opts.scripts):
            raise exceptions.OptionsError(f"rr is loaded by rr run; remove {RR_SCRIPT} from scripts")
        if "connection_strategy" in given and opts.connection_strategy != "lazy":
            raise exceptions.OptionsError(LAZY_ONLY)
        m.addons.chain = full
        m.addons.invoke_addon_sync(rr, hooks.ConfigureHook(set(opts.keys())))
    except exceptions.OptionsError as e:
        raise StartupError(f"{sys.argv[0]}: {e}", 1) from None

    if not opts.scripts:
        patches.skip_message_typechecks()
    patches.read_options_without_copies()
    lean = LeanChain(m, full, Asked(opts, web, given))
    lean.apply()
    m.lean = lean  # type: ignore[attr-defined]
    patches.route_option_changes(m, lean.options_changed)
    fast = FastDispatch(m.addons)
    patches.install_dispatch(m.addons, fast)
    # mitmweb's event log shows DEBUG records: there every line is kept
    logfilters.drop_unread_streaming_lines(None if web else fast.unread_debug)
    return m


@dataclass(frozen=True)
class Where:
    """Where a client reaches `rr run ARGS` and the CA it must trust."""

    address: str  # host:port; a wildcard listen host (all interfaces) as loopback, where a local client connects
    ca: Path


def where(arguments: Iterable[str], *, web: bool) -> Where:
    """Where `rr run [--web] ARGUMENTS` will listen (its first proxy server) and
    its CA file: rr's defaults, then confdir/config.yaml and the command line,
    as `prepare` applies them, without starting anything (scripts/quickstart)."""
    from mitmproxy.tools import cmdline
    from mitmproxy.tools.main import process_options

    opts = mitm_options.Options()

    async def declare() -> None:  # a master declares every option mitmproxy's addons have
        _master_class(web)(opts, with_termlog=False)

    asyncio.run(declare())
    args = (cmdline.mitmweb if web else cmdline.mitmdump)(opts).parse_args(list(arguments))
    opts.update(**defaults(web=web))
    opts.set(*args.setoptions, defer=True)
    confdir = Path(opts.confdir).expanduser()
    optmanager.load_paths(opts, str(confdir / "config.yaml"), str(confdir / "config.yml"))
    process_options(None, opts, args)
    mode = mode_specs.ProxyMode.parse(opts.mode[0] if opts.mode else "regular")
    host = mode.listen_host(opts.listen_host)
    port = mode.listen_port(opts.listen_port)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Where(address, Path(opts.confdir).expanduser() / "mitmproxy-ca-cert.pem")


def run(args: list[str], *, web: bool, base: dict[str, Any] | None = None) -> int:
    """Run mitmdump (or mitmweb, `web=True`) with rr and a trimmed addon chain
    until it is stopped, starting from the option values `base`. Returns the
    process exit status."""

    async def main() -> int:
        try:
            m = await prepare(args, web=web, base=base)
        except StartupError as e:
            if e.message:
                print(e.message, file=sys.stderr)
            return e.code
        if base is not None:
            ca = Path(m.options.confdir).expanduser() / "mitmproxy-ca-cert.pem"
            print(f"rr: CA certificate {ca}", file=sys.stderr)
        loop = asyncio.get_running_loop()

        def _sigint(*_: Any) -> None:
            loop.call_soon_threadsafe(getattr(m, "prompt_for_exit", m.shutdown))

        def _sigterm(*_: Any) -> None:
            loop.call_soon_threadsafe(m.shutdown)

        try:
            loop.add_signal_handler(signal.SIGINT, _sigint)
            loop.add_signal_handler(signal.SIGTERM, _sigterm)
        except NotImplementedError:  # pragma: no cover - Windows' proactor loop
            signal.signal(signal.SIGINT, _sigint)
            signal.signal(signal.SIGTERM, _sigterm)
        if hasattr(signal, "SIGPIPE"):
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        await m.run()
        return 0

    try:
        return asyncio.run(main())
    except SystemExit as e:  # errorcheck exits the process on errors logged at start
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--where"]:  # scripts/quickstart: the address and CA file of `rr run ARGS`
        argv = argv[1:]
        web = argv[:1] == ["--web"]
        found = where(argv[1:] if web else argv, web=web)
        print(f"{found.address}\n{found.ca}")
        return 0
    web = bool(argv) and argv[0] == "--web"
    return run(argv[1:] if web else argv, web=web, base=defaults(web=web))


if __name__ == "__main__":
    sys.exit(main())
