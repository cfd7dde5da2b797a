"""Dagster code location: `dagster dev -m pipelines` or workspace.yaml."""

from assets import _offline  # noqa: F401  (air-gapped environment before any library import)
from pipelines.definitions import defs

__all__ = ["defs"]
