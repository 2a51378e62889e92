"""Checks across objects: unique names, references that resolve, one target per
host within a proxy. Pure: returns errors, never raises or writes."""

from __future__ import annotations

from rr_addon.config.path_warnings import path_warnings
from rr_addon.config.load import ConfigError, Source
from rr_addon.policy.schema import Config
from rr_addon.policy.hosts import HostIndex, parse_host_pattern


def check(config: Config, source: Source) -> list[ConfigError]:
    errors: list[ConfigError] = []

    def err(section: str, name: str, field: str, message: str, rest: tuple = ()) -> None:
        path = f"{section}[{name}]" + (f".{field}" if field else "")
        errors.append(ConfigError(source.file_of(section, name), path, message, source.line_of(section, name, rest)))

    targets = {}
    for t in config.targets:
        targets[t.name] = t
        seen: set[str] = set()
        for i, c in enumerate(t.credentials):
            if c.name in seen:
                err("targets", t.name, f"credentials[{c.name}]", "duplicate credential name", ("credentials", i))
            seen.add(c.name)
        try:
            HostIndex((parse_host_pattern(h), None) for h in t.hosts)
        except ValueError as e:
            err("targets", t.name, "hosts", str(e), ("hosts",))

    for p in config.proxies:
        routes: list = []
        bound: set[str] = set()
        for i, pt in enumerate(p.targets):
            field = f"targets[{pt.target}]"
            rest = ("targets", i)
            target = targets.get(pt.target)
            if target is None:
                err("proxies", p.name, field, f"unknown target {pt.target!r}", rest)
                continue
            if pt.target in bound:
                err("proxies", p.name, field, "target listed twice", rest)
                continue
            bound.add(pt.target)
            names = [c.name for c in target.credentials]
            if pt.credential is not None and pt.credential not in names:
                err("proxies", p.name, field + ".credential", f"target {pt.target!r} has no credential {pt.credential!r}", rest)
            elif pt.credential is None and len(names) > 1:
                err("proxies", p.name, field + ".credential", f"target {pt.target!r} has several credentials; name one", rest)
            routes.extend((parse_host_pattern(h), pt.target) for h in target.hosts)
        seen_hosts: dict = {}
        for pattern, tname in routes:
            key = (pattern.host, pattern.port, pattern.wildcard)
            if key in seen_hosts and seen_hosts[key] != tname:
                err("proxies", p.name, "targets", f"host {pattern} belongs to both {seen_hosts[key]!r} and {tname!r}", ("targets",))
            seen_hosts[key] = tname

        seen_creds: set[str] = set()
        for i, c in enumerate(p.credentials):
            rest = ("credentials", i)
            if c.name in seen_creds:
                err("proxies", p.name, f"credentials[{c.name}]", "duplicate credential name", rest)
            seen_creds.add(c.name)
            for tname, cname in c.target_credentials.items():
                field = f"credentials[{c.name}].target_credentials.{tname}"
                if tname not in bound:
                    err("proxies", p.name, field, f"{tname!r} is not a target of this proxy", rest)
                elif cname not in [tc.name for tc in targets[tname].credentials]:
                    err("proxies", p.name, field, f"target {tname!r} has no credential {cname!r}", rest)
    seen_t: set[str] = set()
    for t in config.targets:
        if t.name in seen_t:
            err("targets", t.name, "", "duplicate target name")
        seen_t.add(t.name)
    seen_p: set[str] = set()
    for p in config.proxies:
        if p.name in seen_p:
            err("proxies", p.name, "", "duplicate proxy name")
        seen_p.add(p.name)
    return errors


# --------------------------------------------------------------------------
# Warnings: configurations rr accepts but that do nothing, or not what they seem.
# "Does nothing" is decided against what rr already does without them: a
# request_count meter without limits and without `when` counts every request of
# the proxy, which the per-credential usage counters (`rr usage`) always do; a
# meter that reads a response value, or counts a subset (`when`), is tracking
# on purpose ("track only", docs/policy.md#meter) and is not warned about.

_CONDITIONS = ("methods", "path", "headers", "query", "body", "claims", "mcp")


def _has_condition(match) -> bool:
    return any(getattr(match, f) for f in _CONDITIONS)


def warnings(config: Config, source: Source) -> list[ConfigError]:
    out: list[ConfigError] = []

    def warn(section: str, name: str, field: str, message: str, rest: tuple = ()) -> None:
        path = f"{section}[{name}]" + (f".{field}" if field else "")
        out.append(ConfigError(source.file_of(section, name), path, message, source.line_of(section, name, rest)))

    def rules(section: str, name: str, prefix: str, scope_rules, rest: tuple) -> None:
        for i, r in enumerate(scope_rules):
            if not _has_condition(r):
                what = "denies every request" if r.effect == "deny" else "allows every request its deny rules do not match"
                warn(
                    section, name, f"{prefix}rules[{r.name}]",
                    f"has no condition, so it matches every request: the scope {what} and its default_effect never applies; "
                    f"add one of {', '.join(_CONDITIONS)}, or drop the rule and set default_effect: {r.effect}",
                    rest + ("rules", i),
                )

    used = {pt.target for p in config.proxies for pt in p.targets}
    for t in config.targets:
        rules("targets", t.name, "", t.rules, ())
        for i, c in enumerate(t.credentials):
            rules("targets", t.name, f"credentials[{c.name}].", c.rules, ("credentials", i))
        if t.name not in used:
            warn("targets", t.name, "", "no proxy lists this target, so no request can reach it; add it to a proxy's targets")
    for p in config.proxies:
        rules("proxies", p.name, "", p.rules, ())
        for i, c in enumerate(p.credentials):
            rules("proxies", p.name, f"credentials[{c.name}].", c.rules, ("credentials", i))
        if not p.targets:
            warn("proxies", p.name, "targets", "the proxy has no targets: every request is refused with 403 unknown-target", ("targets",))
        if not p.credentials:
            warn("proxies", p.name, "credentials", "the proxy has no credentials: no caller can authenticate to it", ("credentials",))
        for i, m in enumerate(p.meters):
            rest = ("meters", i)
            if m.when is not None and not _has_condition(m.when):
                warn("proxies", p.name, f"meters[{m.name}].when", f"has no condition and matches every request; omit it or add one of {', '.join(_CONDITIONS)}", rest + ("when",))
            if m.type == "request_count" and not any(v is not None for v in m.limits.by_kind()) and (m.when is None or not _has_condition(m.when)):
                warn(
                    "proxies", p.name, f"meters[{m.name}]",
                    "counts every request without a limit, which the usage counters (`rr usage`) already do, so it does nothing; "
                    "add limits: {minute|hour|day|month: N} to enforce a quota, when: {…} to count a subset, "
                    "or type: response_value to add up a value",
                    rest,
                )
            if m.type == "cost" and m.reserve is None and any(v is not None for v in m.limits.by_kind()):
                warn(
                    "proxies", p.name, f"meters[{m.name}]",
                    "a cost meter without reserve admits every request while the total is under the limit, so concurrent "
                    "requests can overrun it; add reserve: {json_path: $.max_tokens, default: N} (docs/budgets.md)",
                    rest,
                )
    out.extend(path_warnings(config, source))  # paths that probably do not mean what they look like
    return out
