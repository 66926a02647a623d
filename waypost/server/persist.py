"""Durable write-through of the catalog's state to SQLite (stdlib ``sqlite3``, WAL mode).

One dedicated writer thread owns the connection. Mutations hand their rows to :meth:`Persister.submit`
and await the returned future; the writer drains everything queued so far into ONE transaction, so
concurrent writes share a commit (group commit). ``synchronous=FULL`` makes each commit durable
across power loss, not only across a process crash; with WAL the fsync costs well under a millisecond
on ordinary disks, so the HTTP answer to a write is sent only after its rows are on disk.

Readers see the in-memory state at once, but :meth:`Persister.wait_durable` lets them hold an answer
until its index is on disk too, so no ``X-Consul-Index`` a client saw can be lost by a crash (the
index never goes backwards across a restart, as with Consul's raft log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("waypost.catalog.persist")

DB_NAME = "catalog.db"

Rows = dict[str, list[tuple[str, Any]]]


class PersistError(RuntimeError):
    """A write could not be committed to the data directory."""


class Persister:
    """Group-committing SQLite writer for the catalog's rows (``kind``, ``key`` → JSON value)."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, DB_NAME)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="waypost-catalog-db")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[list[tuple[str, str, Any]], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0
        self.writes = 0
        self.durable_index = 0  # the highest raft-ish index whose rows are committed
        self._durable_changed = asyncio.Event()

    async def open(self) -> Rows:
        """Open (or create) the database and return every stored row grouped by kind."""
        loop = asyncio.get_running_loop()
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            rows = await loop.run_in_executor(self._executor, self._open_sync)
        except (OSError, sqlite3.Error) as exc:
            self._executor.shutdown(wait=False)
            raise PersistError(f"--data-dir {self.data_dir}: cannot open {self.path}: {exc}") from exc
        self._task = asyncio.create_task(self._writer_loop(), name="waypost-catalog-persist")
        return rows

    def _open_sync(self) -> Rows:
        conn = sqlite3.connect(self.path, isolation_level=None)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS rows (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (kind, key)) WITHOUT ROWID")
        rows: Rows = {}
        for kind, key, value in conn.execute("SELECT kind, key, value FROM rows"):
            rows.setdefault(kind, []).append((key, json.loads(value)))
            if kind == "meta" and key == "index":
                self.durable_index = int(json.loads(value))
        self._conn = conn
        return rows

    async def wait_durable(self, index: int, timeout: float) -> bool:
        """Wait until everything up to `index` is committed (or failed); False after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.durable_index < index and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._durable_changed.wait()
            except TimeoutError:
                return False
        return True

    def _advance(self, merged: dict[tuple[str, str], Any]) -> None:
        index = merged.get(("meta", "index"))
        if isinstance(index, int) and index > self.durable_index:
            self.durable_index = index
        changed, self._durable_changed = self._durable_changed, asyncio.Event()
        changed.set()

    def submit(self, ops: list[tuple[str, str, Any]]) -> asyncio.Future[None]:
        """Queue rows for the next transaction; the future resolves once they are committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closing:
            fut.set_exception(PersistError("the catalog is shutting down; write not persisted"))
            return fut
        self._pending.append((ops, fut))
        self._wake.set()
        return fut

    async def _writer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                # coalesce: only the last value of each row in the batch reaches the disk
                merged: dict[tuple[str, str], Any] = {}
                for ops, _ in batch:
                    for kind, key, row in ops:
                        merged[(kind, key)] = row
                try:
                    await loop.run_in_executor(self._executor, self._write_sync, merged)
                except Exception as exc:  # noqa: BLE001 - every failure is reported to the writers
                    log.error("catalog: writing %d change(s) to %s failed: %s", len(batch), self.path, exc)
                    error = PersistError(f"write not persisted to {self.path}: {exc}")
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(error)
                    self._advance(merged)  # failed for good: readers must not wait for it
                else:
                    self._advance(merged)
                    self.transactions += 1
                    self.writes += len(batch)
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
            if self._closing and not self._pending:
                return

    def _write_sync(self, merged: dict[tuple[str, str], Any]) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            deletes = [(k, key) for (k, key), row in merged.items() if row is None]
            upserts = [(k, key, json.dumps(row, separators=(",", ":")))
                       for (k, key), row in merged.items() if row is not None]
            if deletes:
                conn.executemany("DELETE FROM rows WHERE kind = ? AND key = ?", deletes)
            if upserts:
                conn.executemany("INSERT OR REPLACE INTO rows (kind, key, value) VALUES (?, ?, ?)", upserts)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Commit what is queued, then close the database and stop the writer thread."""
        self._closing = True
        self._wake.set()
        self._durable_changed.set()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        loop = asyncio.get_running_loop()
        if self._conn is not None:
            await loop.run_in_executor(self._executor, self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
