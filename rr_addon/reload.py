"""The reload watcher: new configuration versions and rotated secret files, swapped in
whole while rr runs. The running snapshot stays on any failure.

Two background loops: `watch` asks the database for the current version (at
once on a PostgreSQL notification, else every interval) and loads a new one;
`rotate` polls the secret files targets read themselves and recompiles the
running version when one changed. One rebuild at a time (`swap_lock`). What a
new snapshot is installed with (identities rebuilt, the addon's snapshot set)
is the caller's `install`; it may raise to refuse the snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from rr_addon import metrics, rotation
from rr_addon.core.snapshot import Snapshot
from rr_addon.crypto import Keyring
from rr_addon.rotation import SecretWatcher
from rr_addon.store import config_store

logger = logging.getLogger("rr")


class Reloader:
    def __init__(self) -> None:
        self.secrets = SecretWatcher()  # target secrets this data plane reads itself
        self.engine: Any = None  # set by the owner once the store it opened loaded
        self.keyring: Keyring | None = None
        self.stored: config_store.Stored | None = None  # what the snapshot was compiled from (recompiled on rotation)
        self.swap_lock = asyncio.Lock()
        self.failed_version: int | None = None

    def load(self, engine: Any, keyring: Keyring) -> Snapshot:
        """Read the stored configuration, follow its watched secrets, compile."""
        stored = config_store.read(engine, keyring)
        self.secrets.update(stored.sources, stored.target_secrets(keyring))
        self.secrets.poll()
        snap = config_store.snapshot_of(stored, keyring, self.secrets)
        self.stored = stored
        return snap

    async def watch(
        self,
        current: Callable[[], Snapshot | None],
        install: Callable[[Snapshot], None],
        interval: Callable[[], float],
        changes: Callable[[], Any],
        poke: Callable[[], None],
    ) -> None:
        """Swap in new configuration versions; keep the running one on any failure."""
        unreachable = False
        while True:
            listener = changes()
            if listener is not None:
                await listener.wait(interval())
            else:
                await asyncio.sleep(interval())
            running = current()
            if self.engine is None or self.keyring is None or running is None:
                continue
            try:
                version = await asyncio.to_thread(config_store.current_version, self.engine)
            except Exception as e:
                if not unreachable:
                    logger.warning("rr: database unreachable (%s); still enforcing version %d", e, running.version)
                unreachable = True
                continue
            if unreachable:
                logger.info("rr: database reachable again")
                unreachable = False
            if version == running.version or version == self.failed_version:
                continue
            try:
                async with self.swap_lock:
                    snap = await asyncio.to_thread(self.load, self.engine, self.keyring)
                    install(snap)
            except Exception as e:
                self.failed_version = version
                metrics.config_reload(False)
                logger.error("rr: configuration version %d failed to load, still enforcing version %d: %s", version, running.version, e)
                continue
            logger.info("rr now enforces configuration version %d", snap.version)
            metrics.config_reload(True, snap.version)
            poke()

    async def rotate(self, install: Callable[[Snapshot], None], poke: Callable[[], None]) -> None:
        """Poll watched secret files; a new value recompiles the running version."""
        while True:
            await asyncio.sleep(rotation.POLL)
            if not self.secrets.watched or self.keyring is None or self.stored is None:
                continue
            async with self.swap_lock:
                try:
                    before = self.secrets.status()
                    changed = await asyncio.to_thread(self.secrets.poll)
                    if self.secrets.status() != before:
                        poke()  # `rr secret status` sees a rotation or a failure at once
                    if not changed:
                        continue
                    snap = await asyncio.to_thread(config_store.snapshot_of, self.stored, self.keyring, self.secrets)
                    install(snap)
                except Exception as e:  # keep enforcing what runs; the next poll retries
                    logger.error("rr: rotated secrets could not be compiled, still using the previous ones: %s", e)
                    continue
