"""What every `rr` subcommand shares: the consoles, `die`, and opening the store.

One set of helpers, imported by each command module; engines opened through
them are disposed when the command ends (`dispose_engines`, run by the app)."""

from __future__ import annotations

import typer
from rich.text import Text

from rr_addon import settings
from rr_addon.cli.consoles import Output
from rr_addon.core.terminal import printable
from rr_addon.crypto import Keyring, MasterKeyError, master_keys
from rr_addon.store import config_store
from rr_addon.store.db import DatabaseError, check_schema, make_engine

console = Output()
err_console = Output(stderr=True)

_engines: list = []  # engines opened by this command, disposed when it ends


def die(message: str) -> typer.Exit:
    """A clear, expected failure: print the message; the caller raises the returned Exit (status 1)."""
    err_console.print(Text.assemble(("rr:", "bold red"), " ", printable(message)), highlight=False, soft_wrap=True)
    return typer.Exit(1)


def dispose_engines() -> None:
    while _engines:
        _engines.pop().dispose()  # no pooled connection outlives the command


def open_database():
    """The engine of an initialised database (no master key needed), or exit with the reason."""
    try:
        engine = make_engine(existing=True)
    except DatabaseError as e:
        raise die(str(e)) from None
    _engines.append(engine)
    try:
        check_schema(engine)
    except DatabaseError as e:
        raise die(str(e)) from None
    return engine


def open_store():
    """Engine and keyring of an initialised database, or exit with the reason."""
    engine = open_database()
    try:
        keyring = Keyring(master_keys(settings.home()))
        config_store.check_key(engine, keyring)
    except (DatabaseError, MasterKeyError) as e:
        raise die(str(e)) from None
    return engine, keyring


def read_stored(engine, keyring) -> config_store.Stored:
    try:
        return config_store.read(engine, keyring)
    except config_store.StoredConfigError as e:
        raise die(str(e)) from None


def load_snapshot(engine, keyring):
    try:
        return config_store.load_snapshot(engine, keyring)
    except config_store.StoredConfigError as e:
        raise die(str(e)) from None
