"""Reading and writing the configuration: the one place that maps `Config`
objects to rows. `apply` writes a whole configuration in one transaction and
bumps the version data planes watch; `load_snapshot` is what they call."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Callable

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import select

from rr_addon.policy import schema
from rr_addon.config.diff import SECRET_FIELDS as diff_secret_fields
from rr_addon.config.diff import FieldChange, diff
from rr_addon.core.snapshot import CompileError, Snapshot, compile_snapshot
from rr_addon.crypto import Keyring
from rr_addon.rotation import read_by_data_plane, seal, unseal
from rr_addon.store import minted, notify, oauth_grants
from rr_addon.store.db import session
from rr_addon.store.tables import (
    ConfigState,
    ProxyCredentialRow,
    ProxyRow,
    TargetCredentialRow,
    TargetRow,
    utcnow,
)


class ConcurrentChange(Exception):
    pass


@dataclass
class Stored:
    version: int
    config: schema.Config  # secrets omitted
    hmac_key: bytes
    target_secrets_enc: dict[tuple[str, str], bytes] = field(default_factory=dict)
    caller_digests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    caller_secrets_enc: dict[tuple[str, str], bytes] = field(default_factory=dict)  # credentials that verify tokens
    caller_generations: dict[tuple[str, str], str] = field(default_factory=dict)  # what minted tokens are bound to
    sources: dict[tuple[str, str, str], str | None] = field(default_factory=dict)  # (section, obj, cred) -> source
    broken: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> why it does not load (lenient reads)
    in_clear: set[tuple[str, str]] = field(default_factory=set)  # (kind, name) of rows whose spec holds a secret
    revoked_tokens: frozenset[str] = frozenset()  # minted tokens revoked and not yet expired

    def target_secrets(self, keyring: Keyring) -> dict[tuple[str, str], str]:
        return {k: keyring.decrypt(v).decode("utf-8") for k, v in self.target_secrets_enc.items()}

    def caller_secrets(self, keyring: Keyring) -> dict[tuple[str, str], str]:
        return {k: keyring.decrypt(v).decode("utf-8") for k, v in self.caller_secrets_enc.items()}


@dataclass(frozen=True)
class Change:
    action: str  # create | update | delete | unchanged
    kind: str  # target | target credential | proxy | proxy credential
    name: str
    detail: str = ""  # the changed top-level fields, comma-separated
    fields: tuple[FieldChange, ...] = ()  # old -> new per changed field (never a secret's value)


def initialise(engine: Engine, keyring: Keyring) -> bool:
    """Create the state row with a fresh digest key. Returns False if it existed."""
    with session(engine) as s:
        if s.get(ConfigState, 1) is not None:
            return False
        s.add(ConfigState(id=1, version=0, hmac_key_enc=keyring.encrypt(os.urandom(32))))
        s.commit()
        return True


def check_key(engine: Engine, keyring: Keyring) -> None:
    """Raise MasterKeyError unless `keyring` decrypts this database's secrets."""
    with session(engine) as s:
        state = s.get(ConfigState, 1)
        if state is not None:
            keyring.decrypt(state.hmac_key_enc)


def current_version(engine: Engine) -> int:
    with engine.connect() as conn:
        row = conn.execute(select(ConfigState.version).where(ConfigState.id == 1)).first()
    if row is None:
        raise LookupError("database is not initialised: run `rr init`")
    return row[0]


class StoredConfigError(Exception):
    """A stored row no longer loads (written by an older rr, or edited by hand).
    The message names the object; a valid `rr apply` replaces the row."""


def read(engine: Engine, keyring: Keyring, *, lenient: bool = False) -> Stored:
    """The stored configuration. Raises StoredConfigError on a row that does not
    load, unless `lenient` (what `rr apply` uses, so it can repair the store): then
    such objects are left out of `config` and listed in `broken`."""
    with session(engine) as s:
        return _read(s, keyring, lenient)


def _validate(model, spec: dict, what: str, broken: dict[tuple[str, str], str] | None):
    try:
        return model.validate_python(spec) if isinstance(model, TypeAdapter) else model.model_validate(spec)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"] if str(x) not in _UNION_TAGS)
        msg = first["msg"].removeprefix("Value error, ")  # pydantic's wording for a validator's ValueError
        message = f"stored {what} does not load: {where + ': ' if where else ''}{msg} (run `rr apply` with a valid configuration to replace it)"
        if broken is None:
            raise StoredConfigError(message) from None
        kind, _, name = what.rpartition(" ")
        broken[(kind, name)] = message
        return None


_TARGET_CREDENTIAL = TypeAdapter(schema.TargetCredential)
_PROXY_CREDENTIAL = TypeAdapter(schema.ProxyCredential)
_UNION_TAGS = {"api_key", "bearer", "basic", "jwt", "custom", "none", "jwt_verify", "oauth2", "oauth2_client_credentials", "oauth2_refresh_token", "oauth2_jwt_bearer"}  # not fields


def _owners(s, owner_table, cred_table, owner_key: str, model, cred_adapter, kind: str, stored: Stored, broken):
    """Targets or proxies with their credentials, validated (a row that does not load is
    left out and named in `broken` when lenient); also every (owner name, credential row)."""
    by_owner: dict[int, list] = {}
    for c in s.exec(select(cred_table).order_by(cred_table.id)):
        by_owner.setdefault(getattr(c, owner_key), []).append(c)
    objects, rows = [], []
    for o in s.exec(select(owner_table).order_by(owner_table.id)):
        creds = by_owner.get(o.id, [])
        specs = [_without_secrets(c.spec) for c in creds]
        stored.in_clear |= {(f"{kind} credential", f"{o.name}/{c.name}") for c, sp in zip(creds, specs) if sp != c.spec}
        good = [sp for c, sp in zip(creds, specs) if _validate(cred_adapter, sp, f"{kind} credential {o.name}/{c.name}", broken)]
        obj = _validate(model, {**o.spec, "credentials": good}, f"{kind} {o.name}", broken)
        if obj is not None:
            objects.append(obj)
        rows += [(o.name, c) for c in creds]
    return objects, rows


def _read(s, keyring: Keyring, lenient: bool) -> Stored:
    state = s.get(ConfigState, 1)
    if state is None:
        raise LookupError("database is not initialised: run `rr init`")
    stored = Stored(version=state.version, config=schema.Config(), hmac_key=keyring.decrypt(state.hmac_key_enc))
    broken = stored.broken if lenient else None
    targets, target_rows = _owners(s, TargetRow, TargetCredentialRow, "target_id", schema.Target, _TARGET_CREDENTIAL, "target", stored, broken)
    for name, c in target_rows:
        if c.secret_enc is not None:
            stored.target_secrets_enc[(name, c.name)] = c.secret_enc
        stored.sources[("targets", name, c.name)] = unseal(c.secret_source, stored.hmac_key)
    proxies, proxy_rows = _owners(s, ProxyRow, ProxyCredentialRow, "proxy_id", schema.Proxy, _PROXY_CREDENTIAL, "proxy", stored, broken)
    for name, c in proxy_rows:
        if c.secret_digest is not None:
            stored.caller_digests[(name, c.name)] = c.secret_digest
        if c.secret_enc is not None:
            stored.caller_secrets_enc[(name, c.name)] = c.secret_enc
        stored.caller_generations[(name, c.name)] = c.generation or ""
        stored.sources[("proxies", name, c.name)] = c.secret_source
    stored.config = schema.Config(targets=targets, proxies=proxies)
    stored.revoked_tokens = minted.revoked_ids(s)
    return stored


def snapshot_of(stored: Stored, keyring: Keyring, watched=None) -> Snapshot:
    """Compile what `read` returned: exactly what a data plane enforces.
    `watched` (a rotation.SecretWatcher) overrides the secrets it reads itself."""
    target_secrets = stored.target_secrets(keyring)
    if watched is not None:
        target_secrets = {**target_secrets, **watched.values()}
    try:
        return compile_snapshot(
            stored.config,
            version=stored.version,
            hmac_key=stored.hmac_key,
            target_secrets=target_secrets,
            caller_digests=stored.caller_digests,
            caller_secrets=stored.caller_secrets(keyring),
            caller_generations=stored.caller_generations,
            revoked_tokens=stored.revoked_tokens,
            previous_secrets=watched.previous() if watched is not None else None,
        )
    except CompileError as e:
        raise StoredConfigError(str(e)) from None


def load_snapshot(engine: Engine, keyring: Keyring) -> Snapshot:
    return snapshot_of(read(engine, keyring), keyring)


# ---------------------------------------------------------------------------
# Writing


def target_spec(t: schema.Target) -> dict:
    return t.model_dump(mode="json", exclude={"credentials"}, exclude_none=True, by_alias=True)


SECRET_FIELDS = diff_secret_fields  # stored encrypted (or as a digest), never in a spec


def credential_spec(c: schema.BaseModel) -> dict:
    return c.model_dump(mode="json", exclude=set(SECRET_FIELDS), exclude_none=True, by_alias=True)


def _without_secrets(spec: dict) -> dict:
    """Specs written before client_secret was excluded may hold it (a literal
    secret, in clear): it is never read back, so never exported."""
    return {k: v for k, v in spec.items() if k not in SECRET_FIELDS}


def proxy_spec(p: schema.Proxy) -> dict:
    return p.model_dump(mode="json", exclude={"credentials"}, exclude_none=True, by_alias=True)


@dataclass
class Desired:
    """A configuration ready to write: secrets resolved (None = keep stored)."""

    config: schema.Config
    target_secrets: dict[tuple[str, str], tuple[str | None, str | None]]  # -> (plaintext, source)
    caller_digests: dict[tuple[str, str], tuple[bytes | None, str | None]]  # -> (digest, source)
    # credentials that verify tokens: (plaintext or None when they use none, source)
    caller_secrets: dict[tuple[str, str], tuple[str | None, str | None]] = field(default_factory=dict)


def plan(stored: Stored, desired: Desired, keyring: Keyring) -> list[Change]:
    """Differences between what is stored and what is desired, in a stable order."""
    changes: list[Change] = []
    old_targets = {t.name: t for t in stored.config.targets}
    old_proxies = {p.name: p for p in stored.config.proxies}
    for t in desired.config.targets:
        old = old_targets.pop(t.name, None)
        changes.append(_compare("target", t.name, old and target_spec(old), target_spec(t)))
        old_creds = {c.name: c for c in (old.credentials if old else [])}
        for c in t.credentials:
            oc = old_creds.pop(c.name, None)
            secret, source = desired.target_secrets.get((t.name, c.name), (None, None))
            secret_changed = False
            if oc is not None and secret is not None:
                enc = stored.target_secrets_enc.get((t.name, c.name))
                secret_changed = enc is None or keyring.decrypt(enc).decode() != secret
                # starting, stopping or moving a watch changes what data planes do, even with the same value
                old_source = stored.sources.get(("targets", t.name, c.name)) or ""
                secret_changed |= source != old_source and (read_by_data_plane(source) or read_by_data_plane(old_source))
            changes.append(
                _compare("target credential", f"{t.name}/{c.name}", oc and credential_spec(oc), credential_spec(c), secret_changed)
            )
        changes += [Change("delete", "target credential", f"{t.name}/{n}") for n in old_creds]
    for n, t in old_targets.items():  # a deleted object's credentials go with it: list them too
        changes += [Change("delete", "target", n)] + [Change("delete", "target credential", f"{n}/{c.name}") for c in t.credentials]
    for p in desired.config.proxies:
        old = old_proxies.pop(p.name, None)
        changes.append(_compare("proxy", p.name, old and proxy_spec(old), proxy_spec(p)))
        old_creds = {c.name: c for c in (old.credentials if old else [])}
        for c in p.credentials:
            oc = old_creds.pop(c.name, None)
            digest, _ = desired.caller_digests.get((p.name, c.name), (None, None))
            secret_changed = oc is not None and digest is not None and stored.caller_digests.get((p.name, c.name)) != digest
            if oc is not None and (p.name, c.name) in desired.caller_secrets:
                plain, _ = desired.caller_secrets[(p.name, c.name)]
                enc = stored.caller_secrets_enc.get((p.name, c.name))
                secret_changed = (enc is None) != (plain is None) or (enc is not None and keyring.decrypt(enc).decode() != plain)
            changes.append(
                _compare("proxy credential", f"{p.name}/{c.name}", oc and credential_spec(oc), credential_spec(c), secret_changed)
            )
        changes += [Change("delete", "proxy credential", f"{p.name}/{n}") for n in old_creds]
    for n, p in old_proxies.items():  # a deleted object's credentials go with it: list them too
        changes += [Change("delete", "proxy", n)] + [Change("delete", "proxy credential", f"{n}/{c.name}") for c in p.credentials]
    return _repairs(changes, stored.broken, stored.in_clear)


def _repairs(changes: list[Change], broken: dict[tuple[str, str], str], in_clear: set[tuple[str, str]]) -> list[Change]:
    """Rows that do not load are missing from `stored.config`: show them as replaced
    or deleted. Rows holding a secret in clear are rewritten without it."""
    out = []
    for c in changes:
        if c.action == "create" and (c.kind, c.name) in broken:
            c = Change("update", c.kind, c.name, "replaces a stored row that does not load")
        elif c.action == "unchanged" and (c.kind, c.name) in in_clear:
            c = Change("update", c.kind, c.name, "removes a secret stored in clear (kept encrypted)")
        out.append(c)
    named = {(c.kind, c.name) for c in changes}
    out += [Change("delete", kind, name, "a stored row that does not load") for kind, name in broken if (kind, name) not in named]
    return out


def _compare(kind: str, name: str, old: dict | None, new: dict, secret_changed: bool = False) -> Change:
    if old is None:
        return Change("create", kind, name)
    fields = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    changes = diff(old, new)
    if secret_changed:
        fields.append("secret")
        changes.append(FieldChange("secret", note="changed (value not shown)"))
    if not fields:
        return Change("unchanged", kind, name)
    return Change("update", kind, name, ", ".join(fields), tuple(changes))


def write(
    engine: Engine,
    stored: Stored,
    desired: Desired,
    keyring: Keyring,
    applied_from: str,
    *,
    check: Callable[[Stored], None] | None = None,
    commit: bool = True,
) -> int:
    """Replace the stored configuration with `desired` in one transaction.
    Raises ConcurrentChange if someone else applied since `stored` was read.

    Before committing, the rows just written are read back and handed to
    `check` (which raises to refuse them): what is tested is what data planes
    will load, not the YAML it came from. `commit=False` rolls back (dry run)."""
    now = utcnow()
    with session(engine) as s:
        bumped = s.execute(
            update(ConfigState)
            .where(ConfigState.id == 1, ConfigState.version == stored.version)
            .values(version=ConfigState.version + 1, updated_at=now, applied_from=applied_from[:500])
        )
        if bumped.rowcount != 1:
            s.rollback()
            raise ConcurrentChange("the configuration changed while this apply ran; run it again")

        old_targets = {r.name: r for r in s.exec(select(TargetRow))}
        keep_targets = set()
        for t in desired.config.targets:
            row = old_targets.get(t.name)
            if row is None:
                row = TargetRow(name=t.name, spec=target_spec(t))
                s.add(row)
                s.flush()
            else:
                row.spec, row.updated_at = target_spec(t), now
            keep_targets.add(t.name)
            old_creds = {c.name: c for c in s.exec(select(TargetCredentialRow).where(TargetCredentialRow.target_id == row.id))}
            for c in t.credentials:
                secret, source = desired.target_secrets.get((t.name, c.name), (None, None))
                crow = old_creds.pop(c.name, None)
                if crow is None:
                    crow = TargetCredentialRow(target_id=row.id, name=c.name, kind=c.kind, spec=credential_spec(c))
                    s.add(crow)
                crow.kind, crow.spec, crow.updated_at = c.kind, credential_spec(c), now
                if not c.needs_secret:
                    crow.secret_enc, crow.secret_source = None, None
                elif secret is not None:
                    crow.secret_enc, crow.secret_source = keyring.encrypt(secret.encode("utf-8")), seal(source, stored.hmac_key)
            for crow in old_creds.values():
                s.delete(crow)
        for name, row in old_targets.items():
            if name not in keep_targets:
                _delete_children(s, TargetCredentialRow, TargetCredentialRow.target_id, row.id)
                s.delete(row)

        old_proxies = {r.name: r for r in s.exec(select(ProxyRow))}
        keep_proxies = set()
        for p in desired.config.proxies:
            row = old_proxies.get(p.name)
            if row is None:
                row = ProxyRow(name=p.name, spec=proxy_spec(p))
                s.add(row)
                s.flush()
            else:
                row.spec, row.updated_at = proxy_spec(p), now
            keep_proxies.add(p.name)
            old_creds = {c.name: c for c in s.exec(select(ProxyCredentialRow).where(ProxyCredentialRow.proxy_id == row.id))}
            for c in p.credentials:
                digest, source = desired.caller_digests.get((p.name, c.name), (None, None))
                crow = old_creds.pop(c.name, None)
                if crow is None:
                    crow = ProxyCredentialRow(proxy_id=row.id, name=c.name, auth=c.auth, spec=credential_spec(c))
                    s.add(crow)
                before = (crow.auth, crow.secret_digest, _plain(keyring, crow.secret_enc), _verification(crow.spec))
                crow.auth, crow.spec, crow.updated_at = c.auth, credential_spec(c), now
                if c.verifies:
                    plain, source = desired.caller_secrets.get((p.name, c.name), (None, None))
                    crow.secret_digest = None
                    crow.secret_enc = keyring.encrypt(plain.encode("utf-8")) if plain is not None else None
                    crow.secret_source = source
                elif digest is not None:
                    crow.secret_digest, crow.secret_enc, crow.secret_source = digest, None, source
                if crow.generation is None or before != (crow.auth, crow.secret_digest, _plain(keyring, crow.secret_enc), _verification(crow.spec)):
                    # a new credential, key, kind or way of verifying callers: its minted tokens stop working
                    crow.generation = secrets.token_hex(8)
            for crow in old_creds.values():
                s.delete(crow)
        for name, row in old_proxies.items():
            if name not in keep_proxies:
                _delete_children(s, ProxyCredentialRow, ProxyCredentialRow.proxy_id, row.id)
                s.delete(row)
        oauth_grants.forget_others(s, {(t.name, c.name) for t in desired.config.targets for c in t.credentials if c.kind == "oauth2_refresh_token"})
        notify.notify_change(s, stored.version + 1)  # delivered at commit, to every data plane
        if check is not None:
            s.flush()
            try:
                written = _read(s, keyring, lenient=False)
                written.version = stored.version + 1
                check(written)
            except BaseException:
                s.rollback()
                raise
        if commit:
            s.commit()
        else:
            s.rollback()
        return stored.version + 1


# What a proxy credential's spec says besides who it is: changing these keeps its minted tokens
# (they follow the new rules at once); any other field (issuer, audience, jwks, introspection…) renews its generation.
_NOT_IDENTITY = frozenset({"name", "active", "expires_at", "target_credentials", "description", "rules", "default_effect", "filters", "redact"})


def _verification(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in _NOT_IDENTITY}


def _plain(keyring: Keyring, enc: bytes | None) -> bytes | None:
    return keyring.decrypt(enc) if enc is not None else None


def _delete_children(s, table, column, parent_id: int) -> None:
    for child in s.exec(select(table).where(column == parent_id)):
        s.delete(child)
