#!/usr/bin/env python
"""In-process micro-benchmark of rr's per-request decision path (issue 8 item 2).

    .venv/bin/python scripts/bench_decision.py            # 10 and 10,000 credentials
    .venv/bin/python scripts/bench_decision.py --quick    # fewer iterations

No network, no mitmproxy event loop: each stage is called on a pool of
realistic requests (different callers, exact and wildcard hosts, the three
credential channels) and every call is timed on its own, so p50/p99 are per
decision. The same stages run against a small configuration (10 credentials,
10 targets) and a large one (10,000 credentials over 50 proxies, 1,000
targets): the point is that the cost does not grow with the configuration.

Each stage is timed in 5 batches, interleaved across stages and sizes; p50 is
the lowest batch median (the cost without interference from other processes
on a shared machine), p99 the median of the batches' p99.

Stages (add one by appending to `stages()`; a stage whose module is missing or
not yet integrated is listed as skipped, with the reason):
  facts   the glue: `flows.request_facts` from a mitmproxy flow (header scan)
  auth    `decide.authenticate`: find the presented credential, digest, dict lookup
  route   `decide.route`: the caller's proxy maps host:port to a target
  decide  `decide.decide`: everything the proxy runs today (auth + route + outcome)
  rules   four scopes of `core.rules.ScopeRules` (5 rules each) — until `decide` runs rules itself
  meters  `core.quota.ProxyMeters.plan` + verdict for 3 meters — until `decide` runs meters itself

The last line is JSON: {"decision_us_p50": …, "decision_us_p99": …, "stages": {…}}.
`decision_us_p50` is the p50 of `decide` at 10,000 credentials plus the
p50 of any pre-integration stage (rules, meters), so the number keeps meaning
"the whole decision" as features land.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = (10, 10_000)
BATCHES = 5
CREDS_PER_PROXY = 200
TARGETS_PER_PROXY = 20


# --------------------------------------------------------------------------- the policy


def caller_secret(proxy: int, cred: int) -> str:
    return f"rrk-{proxy:03d}-{cred:05d}-{(proxy * 7919 + cred * 104729) % 999983:06d}"


def shape(n_creds: int) -> tuple[int, int]:
    """(proxies, targets) for a configuration of n_creds credentials."""
    proxies = max(1, n_creds // CREDS_PER_PROXY)
    targets = max(10, n_creds // 10)
    return proxies, targets


def target_hosts(i: int, load_hosts: list[str]) -> list[str]:
    """Target i: the first len(load_hosts) are the hosts the load hits; the rest
    alternate exact names and wildcards (exercising both host indexes)."""
    if i < len(load_hosts):
        return [load_hosts[i]]
    return [f"api-{i:04d}.bench.example"] if i % 2 else [f"*.t{i:04d}.bench.example", f"t{i:04d}.bench.example"]


def policy(n_creds: int, load_hosts: list[str], *, sections: tuple[str, ...] = ()) -> dict:
    """A configuration with n_creds proxy credentials (api_key, literal secrets).

    Every proxy is bound to all load targets plus targets of its own, up to
    TARGETS_PER_PROXY. `sections` adds the optional parts (see OPTIONAL)."""
    n_proxies, n_targets = shape(n_creds)
    targets = []
    for i in range(n_targets):
        t: dict[str, Any] = {
            "name": f"t{i:04d}",
            "hosts": target_hosts(i, load_hosts),
            "credentials": [{"name": "key", "kind": "bearer", "secret": f"upstream-secret-{i:04d}-XXXXXXXXXXXX"}],
        }
        if i < len(load_hosts):
            t["allow_private_addresses"] = True
        targets.append(t)
    proxies = []
    per_proxy = n_creds // n_proxies
    own = max(0, min(TARGETS_PER_PROXY, n_targets) - len(load_hosts))
    for p in range(n_proxies):
        bound = list(range(len(load_hosts)))
        for k in range(own):
            j = len(load_hosts) + (p * own + k) % max(1, n_targets - len(load_hosts))
            if j not in bound:
                bound.append(j)
        proxies.append(
            {
                "name": f"p{p:03d}",
                "targets": [{"target": f"t{j:04d}"} for j in bound],
                "credentials": [{"name": f"c{c:05d}", "auth": "api_key", "secret": caller_secret(p, c)} for c in range(per_proxy)],
            }
        )
    data = {"targets": targets, "proxies": proxies}
    for name in sections:
        OPTIONAL[name](data, load_hosts)
    return data


def _rule(name: str, effect: str, **match: Any) -> dict:
    return {"name": name, "effect": effect, **match}


def _add_rules(data: dict, load_hosts: list[str]) -> None:
    """~20 rules over the four scopes on the path the load takes; none denies the load's GETs."""
    for t in data["targets"][: len(load_hosts)]:
        t["rules"] = [
            _rule("no-deletes", "deny", methods=["DELETE"], priority=900),
            _rule("no-admin", "deny", path="^/admin/", priority=800),
            _rule("no-debug", "deny", headers=[{"name": "(?i)^x-debug$", "presence": "present"}]),
            _rule("limit-cap", "deny", query=[{"name": "^limit$", "value": "^[0-9]{4,}$"}]),
            _rule("reads", "allow", methods=["GET", "HEAD"]),
        ]
        for c in t["credentials"]:
            c["rules"] = [
                _rule("cred-no-export", "deny", path="^/v1/export"),
                _rule("cred-no-put", "deny", methods=["PUT"]),
                _rule("cred-model", "deny", methods=["POST"], body=[{"json_path": "$.model", "value": "^gpt-4o$"}]),
                _rule("cred-reads", "allow", methods=["GET"]),
                _rule("cred-v1", "allow", path="^/v1/"),
            ]
    for p in data["proxies"]:
        p["rules"] = [
            _rule("proxy-no-patch", "deny", methods=["PATCH"]),
            _rule("proxy-no-internal", "deny", path="^/internal"),
            _rule("proxy-agent", "deny", headers=[{"name": "(?i)^user-agent$", "value": "(?i)curl/7\\."}]),
            _rule("proxy-json", "allow", headers=[{"name": "(?i)^accept$", "value": "json"}]),
            _rule("proxy-any", "allow"),
        ]
        for c in p["credentials"][:50]:
            c["rules"] = [_rule("credential-no-delete", "deny", methods=["DELETE"]), _rule("credential-get", "allow", methods=["GET"])]


def _add_meters(data: dict, load_hosts: list[str]) -> None:
    for p in data["proxies"]:
        p["meters"] = [
            {"name": "requests", "type": "request_count", "limits": {"minute": 10_000_000, "day": 1_000_000_000}, "per": "proxy"},
            {"name": "per-credential", "type": "request_count", "limits": {"hour": 100_000_000}, "per": "credential"},
            {"name": "tokens", "type": "response_value", "response_value": {"json_path": "$.usage.total_tokens"}, "limits": {"month": 10**12}},
        ]


def _add_filters(data: dict, load_hosts: list[str]) -> None:
    for t in data["targets"][: len(load_hosts)]:
        t["filters"] = [{"destroy": ["$.data[*].card"]}]
    for p in data["proxies"]:
        p["filters"] = [{"destroy": ["$.data[*].note"]}]


def _add_redact(data: dict, load_hosts: list[str]) -> None:
    for p in data["proxies"]:
        p["redact"] = [{"detectors": ["email", "credit_card", "secret"], "action": "mask", "direction": "response"}]


OPTIONAL: dict[str, Callable[[dict, list[str]], None]] = {
    "rules": _add_rules,
    "meters": _add_meters,
    "filters": _add_filters,
    "redact": _add_redact,
}


def accepted_sections() -> tuple[tuple[str, ...], dict[str, str]]:
    """The optional sections this build's configuration schema accepts, and why the others are left out."""
    from pydantic import ValidationError

    from rr_addon.policy.schema import Config

    ok: list[str] = []
    why: dict[str, str] = {}
    hosts = ["127.0.0.1:1"]
    for name in OPTIONAL:
        try:
            Config.model_validate(policy(10, hosts, sections=(name,)))
        except ValidationError as e:
            first = e.errors()[0]
            why[name] = f"{'.'.join(str(x) for x in first['loc'][-2:])}: {first['msg']}"
        else:
            ok.append(name)
    return tuple(ok), why


# --------------------------------------------------------------------------- requests

HEADERS = [
    ("host", None),
    ("user-agent", "python-httpx/0.28.1"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate"),
    ("connection", "keep-alive"),
    ("content-type", "application/json"),
    ("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("baggage", "team=billing,env=prod"),
    ("idempotency-key", "a2f4c1e0-5d0e-4b7a-9f37-6f8d1b9c2a11"),
]


@dataclass(frozen=True)
class Req:
    method: str
    host: str
    port: int
    path: str
    headers: tuple[tuple[str, str], ...]
    tunnel: tuple[str, ...]


def requests_for(data: dict, n: int, seed: int = 1) -> list[Req]:
    """n requests by callers picked across the whole configuration, to hosts of their proxy."""
    rnd = random.Random(seed)
    targets = {t["name"]: t for t in data["targets"]}
    out = []
    for i in range(n):
        p_i = rnd.randrange(len(data["proxies"]))
        p = data["proxies"][p_i]
        c = rnd.choice(p["credentials"])
        t = targets[rnd.choice(p["targets"])["target"]]
        host = t["hosts"][0]
        if host.startswith("*."):
            host = "eu.api" + host[1:]
        name, _, port = host.partition(":")
        port_n = int(port) if port else 443
        headers = [(k, v if v is not None else name) for k, v in HEADERS]
        tunnel: tuple[str, ...] = ()
        channel = i % 20
        if channel < 14:  # HTTPS_PROXY=http://user:key@…: Basic on the CONNECT
            tunnel = ("Basic " + base64.b64encode(f"{p['name']}:{c['secret']}".encode()).decode(),)
        elif channel < 17:
            headers.append(("x-rr-authorization", f"Bearer {c['secret']}"))
        else:
            headers.append(("authorization", c["secret"]))
        out.append(Req("GET", name, port_n, f"/v1/customers/cus_{i:06d}?limit=10&expand=data", tuple(headers), tunnel))
    return out


# --------------------------------------------------------------------------- stages


@dataclass
class Stage:
    name: str
    what: str
    prepare: Callable[[Any, dict, list[Req]], Callable[[int], Any]] | None  # -> call(i)
    skipped: str | None = None


def _facts(snap: Any, data: dict, reqs: list[Req]) -> Callable[[int], Any]:
    from mitmproxy.test import tflow

    from rr_addon.mitm import flows

    pool = []
    for r in reqs[:200]:
        f = tflow.tflow()
        f.request.method, f.request.scheme, f.request.host, f.request.port, f.request.path = r.method, "https", r.host, r.port, r.path
        f.request.headers.clear()
        for k, v in r.headers:
            f.request.headers.add(k, v)
        pool.append((f, r.tunnel))
    n = len(pool)

    def call(i: int) -> Any:
        f, tunnel = pool[i % n]
        return flows.request_facts(f, tunnel)

    return call


def _facts_pool(reqs: list[Req]) -> list:
    from rr_addon.core.types import RequestFacts

    return [RequestFacts(r.method, "https", r.host, r.port, r.path, r.headers, r.tunnel) for r in reqs]


def _auth(snap: Any, data: dict, reqs: list[Req]) -> Callable[[int], Any]:
    from rr_addon.core.decide import authenticate

    pool, now = _facts_pool(reqs), time.time()
    n = len(pool)

    def call(i: int) -> Any:
        caller, denied, _ = authenticate(snap, pool[i % n], now)
        assert denied is None, denied
        return caller

    return call


def _route(snap: Any, data: dict, reqs: list[Req]) -> Callable[[int], Any]:
    from rr_addon.core.decide import authenticate, route

    pool, now = _facts_pool(reqs), time.time()
    callers = [authenticate(snap, f, now)[0] for f in pool]
    n = len(pool)

    def call(i: int) -> Any:
        binding, refusal = route(snap, callers[i % n], pool[i % n])
        assert refusal is None, refusal
        return binding

    return call


def _decide(snap: Any, data: dict, reqs: list[Req]) -> Callable[[int], Any]:
    from rr_addon.core.decide import decide

    pool, now = _facts_pool(reqs), time.time()
    n = len(pool)

    def call(i: int) -> Any:
        out = decide(snap, pool[i % n], now)
        assert out.decision.allowed, out.decision
        return out

    return call


def _rule_requests(reqs: list[Req]) -> list:
    from rr_addon.policy.paths import canonicalize
    from rr_addon.core.rules import RuleRequest

    out = []
    for r in reqs:
        c = canonicalize(r.path)
        headers: dict[str, tuple[str, ...]] = {}
        for k, v in r.headers:
            headers[k] = headers.get(k, ()) + (v,)
        query = tuple((k, v) for k, _, v in (p.partition("=") for p in (c.query or "").split("&") if p))
        out.append(RuleRequest(r.method, c.path, headers, query))
    return out


def _rules(snap: Any, data: dict, reqs: list[Req]) -> Callable[[int], Any]:
    from rr_addon.policy.rules_schema import Rule
    from rr_addon.core.rules import ScopeRules

    # The rule texts of the four scopes, as the policy generator writes them
    # (independent of the configuration size).
    sample = {"targets": [{"name": "t", "hosts": ["h"], "credentials": [{"name": "k"}]}], "proxies": [{"name": "p", "credentials": [{"name": "c"}]}]}
    _add_rules(sample, ["h"])
    texts = [
        sample["proxies"][0]["rules"],
        sample["targets"][0]["rules"],
        sample["proxies"][0]["credentials"][0]["rules"],
        sample["targets"][0]["credentials"][0]["rules"],
    ]
    scopes = [ScopeRules.compile(s, [Rule.model_validate(r) for r in rules], "allow") for s, rules in zip(("proxy", "target", "proxy credential", "target credential"), texts)]
    pool = _rule_requests(reqs)
    n = len(pool)

    def call(i: int) -> Any:
        req = pool[i % n]
        for s in scopes:
            res = s.evaluate(req)
            if not res.allowed:
                return res
        return res

    return call


def _meters(snap: Any, data: dict, reqs: list[Req]) -> Callable[[int], Any]:
    from rr_addon.policy.meters_schema import MeterSpec
    from rr_addon.core.quota import CheckResult, ProxyMeters, compile_meters

    sample: dict = {"proxies": [{}], "targets": []}
    _add_meters(sample, [])
    specs = [MeterSpec.model_validate(m) for m in sample["proxies"][0]["meters"]]
    # The snapshot's compiled meters when it has them (what the proxy plans with), else our own.
    by_proxy = {
        p["name"]: getattr(snap.proxies[p["name"]], "meters", None) or ProxyMeters(p["name"], compile_meters(specs)) for p in data["proxies"]
    }
    names = [(p["name"], c["name"]) for p in data["proxies"] for c in p["credentials"]]
    rnd = random.Random(2)
    who = [rnd.choice(names) for _ in reqs]
    rule_reqs = _rule_requests(reqs)
    n = len(reqs)
    now = time.time()

    def call(i: int) -> Any:
        proxy, cred = who[i % n]
        plan = by_proxy[proxy].plan(cred, rule_reqs[i % n], now)
        return plan.verdict(CheckResult(True, (1,) * len(plan.ops)))

    return call


def stages() -> list[Stage]:
    out = [
        Stage("facts", "glue: RequestFacts from a mitmproxy flow", _facts),
        Stage("auth", "decide.authenticate", _auth),
        Stage("route", "decide.route", _route),
        Stage("decide", "decide.decide (what the proxy runs today)", _decide),
    ]
    for name, what, fn, module in (
        ("rules", "4 scopes x 5 rules evaluated directly with core.rules (part of decide once integrated)", _rules, "rr_addon.core.rules"),
        ("meters", "3 meters: the proxy's meters plan + verdict, no counter backend (the glue runs it after decide)", _meters, "rr_addon.core.quota"),
    ):
        try:
            __import__(module)
        except Exception as e:  # not built yet, or broken: say so, keep measuring the rest
            out.append(Stage(name, what, None, skipped=f"{module}: {e}"))
            continue
        out.append(Stage(name, what, fn))
    return out


# --------------------------------------------------------------------------- timing


def time_calls(call: Callable[[int], Any], iterations: int, warmup: int = 2000) -> list[float]:
    for i in range(warmup):
        call(i)
    clock = time.perf_counter_ns
    out = [0.0] * iterations
    for i in range(iterations):
        t0 = clock()
        call(i)
        out[i] = (clock() - t0) / 1000.0
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def integrated() -> dict[str, bool]:
    """Which optional stages `decide` already runs (then they are part of its timing)."""
    import dataclasses
    import inspect

    from rr_addon.core import decide as decide_mod
    from rr_addon.core import snapshot as snapshot_mod

    fields = {f.name for f in dataclasses.fields(snapshot_mod.Proxy)}
    source = inspect.getsource(decide_mod.decide)
    # Meters need counters, so the glue plans them after `decide` (rr_addon/addon.py):
    # they count as part of the decision until `decide` plans them itself.
    return {"rules": "rules" in fields, "meters": "meters" in fields and ".plan(" in source}


def measure(iterations: int = 20_000, sizes: tuple[int, ...] = SIZES, *, log: Callable[[str], None] = print) -> dict:
    """Time every stage at every size. The batches are interleaved (batch 1 of
    every stage and size, then batch 2, …) so a burst of load from other
    processes hits both sizes alike; p50 is the lowest batch median, p99 the
    median of the batches' p99."""
    from rr_addon.core.decide import decide  # noqa: F401  (fail early if the core is broken)
    from rr_addon.testing.snapshots import snapshot_from

    skipped: dict[str, str] = {}
    sections, left_out = accepted_sections()
    log(f"  policy sections the schema accepts: {', '.join(sections) or 'none'}" + "".join(f"; left out {k} ({v})" for k, v in left_out.items()))
    calls: list[tuple[str, int, Callable[[int], Any]]] = []
    for size in sizes:
        data = policy(size, ["127.0.0.1:8443", "127.0.0.2:8443"], sections=sections)
        t0 = time.perf_counter()
        snap = snapshot_from(data)
        compile_s = time.perf_counter() - t0
        reqs = requests_for(data, 1000)
        log(f"  {size:>6} credentials, {len(data['targets'])} targets, {len(data['proxies'])} proxies: snapshot compiled in {compile_s:.2f} s")
        for st in stages():
            if st.prepare is None:
                skipped[st.name] = st.skipped or ""
                continue
            try:
                calls.append((st.name, size, st.prepare(snap, data, reqs)))
            except Exception as e:
                skipped[st.name] = f"{type(e).__name__}: {e}"
    batches: dict[tuple[str, int], list[list[float]]] = {}
    per_batch = max(1, iterations // BATCHES)
    for _ in range(BATCHES):
        for name, size, call in calls:
            gc.collect()
            batches.setdefault((name, size), []).append(time_calls(call, per_batch, warmup=min(2000, per_batch)))
    results: dict[str, dict[str, dict[str, float]]] = {}
    for (name, size), bs in batches.items():
        results.setdefault(name, {})[str(size)] = {
            "p50": round(min(statistics.median(b) for b in bs), 2),
            "p99": round(statistics.median(pct(b, 0.99) for b in bs), 2),
            "mean": round(statistics.fmean(x for b in bs for x in b), 2),
        }
    return {"results": results, "skipped": skipped, "sections": sections, "integrated": integrated()}


def summary(m: dict) -> dict:
    """decision_us_p50: `decide` plus the stages it does not run yet."""
    big = str(max(SIZES))
    res = m["results"]
    extra = [s for s in ("rules", "meters") if s in res and not m["integrated"].get(s)]
    p50 = res["decide"][big]["p50"] + sum(res[s][big]["p50"] for s in extra)
    p99 = res["decide"][big]["p99"] + sum(res[s][big]["p99"] for s in extra)
    return {
        "decision_us_p50": round(p50, 2),
        "decision_us_p99": round(p99, 2),
        "decision_stages": ["decide", *extra],
        "in_decide": [k for k, v in m["integrated"].items() if v],
        "policy_sections": list(m["sections"]),
        "stages": res,
        "skipped": m["skipped"],
    }


def render(m: dict) -> Any:
    from rich.table import Table

    table = Table(title="decision path, µs per request (in-process, one core)")
    table.add_column("stage")
    for size in SIZES:
        table.add_column(f"p50 @{size}", justify="right")
        table.add_column(f"p99 @{size}", justify="right")
    table.add_column("p50 growth", justify="right")
    for name, by_size in m["results"].items():
        cells = []
        for size in SIZES:
            r = by_size.get(str(size), {})
            cells += [f"{r.get('p50', float('nan')):.1f}", f"{r.get('p99', float('nan')):.1f}"]
        lo, hi = by_size[str(SIZES[0])]["p50"], by_size[str(SIZES[-1])]["p50"]
        label = name + (" (in decide)" if m["integrated"].get(name) else "")
        table.add_row(label, *cells, f"{hi / lo:.2f}x")
    for name, why in m["skipped"].items():
        table.add_row(name, *["-"] * (2 * len(SIZES)), f"skipped: {why}")
    return table


def legend() -> str:
    return "\n".join(f"  {s.name:7} {s.what}" for s in stages())


def main() -> None:
    from rich.console import Console

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5,000 timed calls per stage instead of 20,000")
    ap.add_argument("--iterations", type=int, default=None)
    a = ap.parse_args()
    console = Console(width=int(os.environ.get("COLUMNS", 0)) or None)
    m = measure(a.iterations or (5_000 if a.quick else 20_000), log=console.print)
    console.print(render(m))
    console.print(legend(), highlight=False)
    print(json.dumps(summary(m)))


if __name__ == "__main__":
    main()
