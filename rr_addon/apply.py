"""`rr apply`: read files, validate everything, resolve secrets, write in one
transaction, read the written rows back and load them as a data plane would,
and only then commit — all, or nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from sqlalchemy.engine import Engine

from rr_addon.config import validate
from rr_addon.policy import schema
from rr_addon.policy.oauth_grants_schema import SecretBundle
from rr_addon.config.load import ConfigError, ConfigErrors, EnvSecret, ExecSecret, FileSecret, Source, command_argv, load_files, resolve_secret
from rr_addon.core.digests import basic_digest, token_digest
from rr_addon.crypto import Keyring
from rr_addon.rotation import WATCHED, exec_source
from rr_addon.store import config_store
from rr_addon.store.config_store import Change, Desired, Stored, StoredConfigError


@dataclass
class Prepared:
    stored: Stored
    desired: Desired
    changes: list[Change]
    paths: list[str]
    warnings: list[ConfigError] = field(default_factory=list)  # configurations that do nothing

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)

    @property
    def deletes(self) -> list[Change]:
        return [c for c in self.changes if c.action == "delete"]

    @property
    def empty(self) -> bool:
        return not self.desired.config.targets and not self.desired.config.proxies


def source_label(ref: object, base: Path | None = None) -> str:
    if isinstance(ref, EnvSecret):
        return f"env:{ref.env}"
    if isinstance(ref, FileSecret) and ref.watch:
        # Absolute, so the data plane finds it whatever its working directory; not
        # resolved through symlinks, so Kubernetes' `..data` swap is followed.
        return f"{WATCHED}{os.path.abspath((base or Path.cwd()) / ref.file)}"
    if isinstance(ref, FileSecret):
        return f"file:{ref.file}"
    if isinstance(ref, ExecSecret):
        return exec_source(command_argv(ref, base or Path.cwd()), ref.timeout, ref.refresh)
    return "literal"


def prepare(paths: Sequence[str | Path], engine: Engine, keyring: Keyring, env: Mapping[str, str] = os.environ) -> Prepared:
    config, source = load_files(paths)
    return prepare_loaded(config, source, [str(p) for p in paths], engine, keyring, env)


def prepare_loaded(
    config: schema.Config,
    source: Source,
    paths: Sequence[str],
    engine: Engine,
    keyring: Keyring,
    env: Mapping[str, str] = os.environ,
    labels: Mapping[tuple[str, str, str], str] | None = None,
) -> Prepared:
    """`prepare` for a configuration already loaded. `labels` name the source of
    secrets resolved elsewhere (`rr apply --server`: on the operator's machine)."""
    errors = validate.check(config, source)
    # Lenient: objects stored by an older rr that no longer load are listed, not
    # fatal, so that this apply can replace them.
    stored = config_store.read(engine, keyring, lenient=True)
    target_secrets, caller_digests, caller_secrets = _resolve(config, source, stored, env, errors, keyring)
    errors.extend(identity_conflicts(config, source))
    if errors:
        raise ConfigErrors(errors)
    if labels:
        for section, resolved in (("targets", target_secrets), ("proxies", caller_digests), ("proxies", caller_secrets)):
            for (obj, cred), (value, label) in list(resolved.items()):
                if value is not None and (section, obj, cred) in labels:
                    resolved[(obj, cred)] = (value, labels[(section, obj, cred)])
    desired = Desired(config, target_secrets, caller_digests, caller_secrets)
    return Prepared(stored, desired, config_store.plan(stored, desired, keyring), list(paths), validate.warnings(config, source))


def loadable(stored: Stored, keyring: Keyring) -> None:
    """Raise StoredConfigError unless `stored` loads the way a data plane loads it
    (rr_addon.addon: load_snapshot, then Identities.rebuild)."""
    from rr_addon.identity.service import Identities

    snap = config_store.snapshot_of(stored, keyring)
    try:
        Identities().rebuild(snap)  # outside an event loop: builds verifiers, fetches nothing
    except ValueError as e:
        raise StoredConfigError(f"configuration would not load: {e}") from None


def _resolve(config: schema.Config, source: Source, stored: Stored, env: Mapping[str, str], errors: list[ConfigError], keyring: Keyring):
    target_secrets: dict = {}
    caller_digests: dict = {}
    caller_secrets: dict = {}
    stored_proxies = {p.name: {c.name: c for c in p.credentials} for p in stored.config.proxies}

    def err(section: str, obj: str, cred: str, index: int, message: str) -> None:
        errors.append(
            ConfigError(
                source.file_of(section, obj),
                f"{section}[{obj}].credentials[{cred}].secret",
                message,
                source.line_of(section, obj, ("credentials", index, "secret")),
            )
        )

    for t in config.targets:
        base = source.base_dirs.get(("targets", t.name), Path.cwd())
        for i, c in enumerate(t.credentials):
            ref = c.secret_ref
            if not c.needs_secret:
                if ref is not None:
                    err("targets", t.name, c.name, i, f"a '{c.kind}' credential takes no secret")
                continue
            if ref is None:
                if (t.name, c.name) not in stored.target_secrets_enc:
                    err("targets", t.name, c.name, i, "required for a new credential")
                target_secrets[(t.name, c.name)] = (None, None)
                continue
            try:
                if isinstance(ref, SecretBundle):  # several secrets of one credential (rr_addon.policy.oauth_grants_schema)
                    target_secrets[(t.name, c.name)] = ref.resolve(base, env, resolve_secret, source_label)
                else:
                    target_secrets[(t.name, c.name)] = (resolve_secret(ref, base, env), source_label(ref, base))
            except ValueError as e:
                err("targets", t.name, c.name, i, str(e))

    for p in config.proxies:
        base = source.base_dirs.get(("proxies", p.name), Path.cwd())
        for i, c in enumerate(p.credentials):
            old = stored_proxies.get(p.name, {}).get(c.name)
            if isinstance(c.secret_ref, FileSecret) and c.secret_ref.watch:
                err("proxies", p.name, c.name, i, "`watch: true` is for target credentials only; run `rr apply` to change a caller secret")
                continue
            if isinstance(c.secret_ref, ExecSecret):
                err("proxies", p.name, c.name, i, "a `command` secret is for target credentials only; run `rr apply` to change a caller secret")
                continue
            if c.verifies:
                # an HMAC key or a client secret: stored encrypted, because rr uses it
                ref = c.secret_ref
                field = "client_secret" if c.auth == "oauth2" else "secret (the HMAC key)"
                if ref is not None:
                    try:
                        caller_secrets[(p.name, c.name)] = (resolve_secret(ref, base, env), source_label(ref))
                    except ValueError as e:
                        err("proxies", p.name, c.name, i, str(e))
                elif getattr(c, "introspection_url", None) is not None or getattr(c, "uses_hmac_secret", False):
                    enc = stored.caller_secrets_enc.get((p.name, c.name))
                    if enc is None:
                        err("proxies", p.name, c.name, i, f"{field} is required for a new credential")
                    else:
                        caller_secrets[(p.name, c.name)] = (keyring.decrypt(enc).decode(), stored.sources.get(("proxies", p.name, c.name)))
                else:
                    caller_secrets[(p.name, c.name)] = (None, None)
                continue
            if c.secret is None:
                if old is None:
                    err("proxies", p.name, c.name, i, "required for a new credential")
                elif old.auth != c.auth or getattr(old, "username", None) != getattr(c, "username", None):
                    err("proxies", p.name, c.name, i, "auth or username changed: give the secret again")
                caller_digests[(p.name, c.name)] = (None, None)
                continue
            try:
                secret = resolve_secret(c.secret, base, env)
            except ValueError as e:
                err("proxies", p.name, c.name, i, str(e))
                continue
            if isinstance(c, schema.BasicCaller):
                digest = basic_digest(stored.hmac_key, c.username, secret)
            else:
                digest = token_digest(stored.hmac_key, secret)
            caller_digests[(p.name, c.name)] = (digest, source_label(c.secret))
    return target_secrets, caller_digests, caller_secrets


def identity_conflicts(config: schema.Config, source: Source) -> list[ConfigError]:
    """One token must never be able to match two verifying credentials."""
    from rr_addon.identity.matching import conflicts, spec_for

    specs = [spec_for(p.name, c) for p in config.proxies for c in p.credentials if c.verifies]
    return [ConfigError(",".join(sorted(set(source.files.values()))) or "<config>", "", message) for message in conflicts(specs)]


def apply(prepared: Prepared, engine: Engine, keyring: Keyring, applied_from: str, *, dry_run: bool = False) -> int:
    """Write (or, dry run, write and roll back) after loading the written rows the
    way a data plane will: what cannot load is refused, nothing changes.
    Raises ConfigErrors, ConcurrentChange."""

    def check(written: Stored) -> None:
        try:
            loadable(written, keyring)
        except StoredConfigError as e:
            raise ConfigErrors([ConfigError(",".join(prepared.paths), "", str(e))]) from None

    return config_store.write(engine, prepared.stored, prepared.desired, keyring, applied_from, check=check, commit=not dry_run)
