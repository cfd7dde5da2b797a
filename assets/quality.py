"""Great Expectations 1.x validation of tabular asset outputs (dagster-ge only supports GX<1)."""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from assets import _offline  # noqa: F401  (GX analytics off before import)


@lru_cache(maxsize=1)
def _context():
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # progress bars are cosmetic
        pass
    return context


def validate_frame(name: str, frame: pd.DataFrame, expectations: list) -> tuple[bool, dict]:
    """Validate frame against GX expectations; returns (success, {expectation: observed result})."""
    import great_expectations as gx

    context = _context()
    source = context.data_sources.add_or_update_pandas(name=f"{name}_source")
    asset = source.add_dataframe_asset(name=name)
    batch = asset.add_batch_definition_whole_dataframe(f"{name}_batch").get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations)
    result = batch.validate(suite)
    details = {}
    for item in result.results:
        cfg = item.expectation_config
        column = cfg.kwargs.get("column", "")
        details[f"{cfg.type}({column})"] = {
            "success": bool(item.success),
            "unexpected_count": int((item.result or {}).get("unexpected_count") or 0),
        }
    return bool(result.success), details
