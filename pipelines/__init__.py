"""Dagster code location: Definitions, jobs, schedules, sensors and partitions.

`defs` (pipelines.definitions) is loaded on first access, so that asset modules can import
pipelines.partitions without loading the whole platform. Load it with `dagster dev` (workspace.yaml),
`-m pipelines -a defs` or `-m pipelines.definitions`.
"""

from assets import _offline  # noqa: F401  (air-gapped environment before any library import)
from pipelines.event_log import batch_planned_events, batch_sqlite_event_writes, relax_sqlite_sync

batch_planned_events()
batch_sqlite_event_writes()
relax_sqlite_sync()


def __getattr__(name: str):
    if name == "defs":
        from pipelines.definitions import defs

        return defs
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
