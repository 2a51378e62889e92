"""Checks across objects: unique names, references that resolve, one target per
host within a proxy. Pure: returns errors, never raises or writes."""

from __future__ import annotations

from rr_addon.config.load import ConfigError, Source
from rr_addon.config.schema import Config
from rr_addon.core.hosts import HostIndex, parse_host_pattern


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
