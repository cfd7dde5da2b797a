"""Fewer and cheaper Dagster events per document: a batch run of 200 documents otherwise spends about
half its time storing events.

1. One planned event per asset and run instead of one per document partition
   (`DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`, Dagster's own switch; set here for the processes that
   create runs from this code: run_main, tests, benchmarks; `dagster dev` reads it from the environment, see
   the README). What it changes: when a whole batch run fails (not one bad document, which is reported on its
   partition), Dagster marks the run failed but not each of its partitions.
2. A batch run's per-document materializations stored in one transaction per asset step: Dagster tags the
   materializations of a multi-partition output as one event batch and, with `DAGSTER_EVENT_BATCH_SIZE` set,
   hands them to `store_event_batch`. dagster-postgres implements it with one insert; the SQLite storage
   inherits a loop of single writes, so `batch_sqlite_event_writes` gives it the same: the run shard gets one
   multi-row insert, the cross-run index shard one transaction (event rows, tags, the asset's latest record),
   instead of two new connections and several schema look-ups per document. Same rows as one by one
   (tests/test_ingestion_scale.py compares them).
3. Dagster's local SQLite storage without an fsync per event:

Dagster's SQLite event log opens a new connection for every event it stores (NullPool) and commits it
with SQLite's default `synchronous=FULL`; the last connection's close also checkpoints the WAL. A batch of
200 documents stores a few thousand events (a planned event and a materialization per document and asset),
and on this machine's disk each one cost ~17 ms, about half of a batched ingestion run (measured with
cProfile in bench/ingest.py). With `synchronous=OFF` an event costs ~2 ms.

What it gives up: the local SQLite storage stays consistent when a process is killed (the data is in
the OS's page cache), but an operating-system crash or power loss may lose the last events or damage that
SQLite file. The embedded storage is for one machine and development; production uses PostgreSQL
(dagster.postgres.yaml), which this setting does not touch. `DOCPLATFORM_DAGSTER_SQLITE_SYNCHRONOUS=FULL`
restores SQLite's default.
"""

from __future__ import annotations

import os


# materializations per store_event_batch call: a run's batch of documents (pipelines.partitions) in one or two calls
EVENT_BATCH_SIZE = "500"


def batch_planned_events() -> None:
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)


def _store_sqlite_event_batch(self, events) -> None:
    """SqliteEventLogStorage.store_event_batch: a batch of one run's materializations (or observations) in one
    transaction per shard; anything else one event at a time, as Dagster does."""
    from dagster import DagsterEventType
    from dagster._core.storage.event_log.base import EventLogStorage

    kinds = {event.dagster_event_type for event in events}
    runs = {event.run_id for event in events}
    if len(runs) != 1 or kinds not in ({DagsterEventType.ASSET_MATERIALIZATION}, {DagsterEventType.ASSET_OBSERVATION}):
        return EventLogStorage.store_event_batch(self, events)
    with self.run_connection(next(iter(runs))) as conn:
        conn.execute(self.prepare_insert_event_batch(events))
    with self.index_transaction() as conn:  # mirrored into the index shard, as store_event does
        event_ids = [conn.execute(self.prepare_insert_event(event)).inserted_primary_key[0] for event in events]
        self._store_asset_event_tags(conn, events, event_ids)
        latest = {}
        for event, event_id in zip(events, event_ids):
            latest[event.dagster_event.asset_key] = (event, event_id)
        for event, event_id in latest.values():  # the asset's row keeps its latest event, as after N single writes
            self._store_asset_event(conn, event, event_id)


def batch_sqlite_event_writes() -> None:
    """Gives Dagster's SQLite event log a store_event_batch (it has none; a Dagster release that adds one keeps it)."""
    from dagster._core.storage.event_log.base import EventLogStorage
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    if SqliteEventLogStorage.store_event_batch is EventLogStorage.store_event_batch:
        SqliteEventLogStorage.store_event_batch = _store_sqlite_event_batch


_SETTINGS = {"OFF", "NORMAL", "FULL", "EXTRA"}
_registered = False


def synchronous_setting() -> str:
    value = os.environ.get("DOCPLATFORM_DAGSTER_SQLITE_SYNCHRONOUS", "OFF").strip().upper()
    if value not in _SETTINGS:
        raise ValueError(f"DOCPLATFORM_DAGSTER_SQLITE_SYNCHRONOUS={value!r}: use one of {sorted(_SETTINGS)}")
    return value


def relax_sqlite_sync() -> None:
    """Sets PRAGMA synchronous on every SQLAlchemy SQLite connection of this process (Dagster's storage)."""
    global _registered
    setting = synchronous_setting()
    if _registered or setting == "FULL":
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _set_synchronous(dbapi_connection, _record):  # noqa: ANN001
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA synchronous={setting}")
            cursor.close()

    _registered = True
