"""Great Expectations plumbing: run one expectation on a small DataFrame.

Every check (core/gates/checks.py) validates its frame through `expect`, in one ephemeral GX
context per process: no files written, no analytics sent, no progress bars.
"""

from __future__ import annotations

import os

_GX = None


def _batch(frame):
    """A GX batch over `frame` from one ephemeral context per process (no files, no analytics)."""
    global _GX
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    if _GX is None:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("mix_pipeline").add_dataframe_asset("frame")
        _GX = asset.add_batch_definition_whole_dataframe("whole")
    return _GX.get_batch(batch_parameters={"dataframe": frame})


def expect(frame, expectation_name: str, **kwargs) -> tuple[bool, dict]:
    """Run one GX expectation (by class name, e.g. 'ExpectColumnValuesToBeBetween') on a frame."""
    import great_expectations as gx

    expectation = getattr(gx.expectations, expectation_name)(**kwargs)
    result = _batch(frame).validate(expectation)
    return bool(result.success), dict(result.result or {})
