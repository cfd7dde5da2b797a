"""Fewer and cheaper Dagster events per document: a batch run of 200 documents otherwise spends about
half its time storing events.

1. One planned event per asset and run instead of one per document partition
   (`DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`, Dagster's own switch; set here for the processes that
   create runs from this code: run_main, tests, benchmarks; `dagster dev` reads it from the environment, see
   the README). What it changes: when a whole batch run fails (not one bad document, which is reported on its
   partition), Dagster marks the run failed but not each of its partitions.
2. Dagster's local SQLite storage without an fsync per event:

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


def batch_planned_events() -> None:
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")


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
