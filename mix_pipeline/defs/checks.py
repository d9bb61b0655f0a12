"""Quality gates as Dagster asset checks.

The checks are evaluated inside each stage (core.quality) on the staged output, before it is
published; the asset reports each outcome as an AssetCheckResult on the partition it ran for,
with the observed value as a number where it is one (so the UI can plot it), the expected band and
examples. When an error check fails the stage publishes nothing, the step fails after reporting
every outcome, and downstream steps of the run are skipped; the planner (defs/plan.py) never
starts downstream work for a partition without a newer materialization. Only error-severity
checks are blocking; warn-only checks (drift) are labelled as such.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Iterator

import dagster as dg

from mix_pipeline.core.quality import CHECKS, CheckOutcome, GateFailed, checks_for
from mix_pipeline.core.stages.base import StageResult
from mix_pipeline.defs.metadata import markdown_table


def check_specs(stage: str, partitions_def: dg.PartitionsDefinition | None = None) -> list[dg.AssetCheckSpec]:
    """One spec per check of a stage (its asset has the stage's name), partitioned like the asset so
    each evaluation is recorded on the partition it ran for (a preview feature in Dagster 1.13;
    its warning is silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(name, asset=stage, blocking=CHECKS[name].severity == "error", partitions_def=partitions_def,
                              description=f"Guards against {CHECKS[name].guards}.")
            for name in checks_for(stage)
        ]


def _number(value) -> dg.MetadataValue | None:
    """A number as a numeric metadata value (numpy scalars too), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return dg.MetadataValue.int(int(value)) if isinstance(value, numbers.Integral) else dg.MetadataValue.float(float(value))


def to_result(o: CheckOutcome) -> dg.AssetCheckResult:
    number = _number(o.observed)
    if number is not None:
        observed = number
    elif isinstance(o.observed, (dict, list)):
        observed = dg.MetadataValue.json(o.observed)
    else:
        observed = dg.MetadataValue.text("" if o.observed is None else str(o.observed))
    metadata = {"observed": observed, "expected": dg.MetadataValue.text(o.expected),
                "message": dg.MetadataValue.text(o.message)}
    if isinstance(o.observed, dict):  # per-filter or per-source values: one plottable entry each
        for key, value in o.observed.items():
            if (number := _number(value)) is not None:
                metadata[f"observed/{key}"] = number
    if o.examples:
        metadata["examples"] = markdown_table(o.examples, ["id", "snippet"])
    return dg.AssetCheckResult(
        check_name=o.name,
        passed=o.passed,
        severity=dg.AssetCheckSeverity.ERROR if o.severity == "error" else dg.AssetCheckSeverity.WARN,
        description=o.message,
        metadata=metadata,
    )


def gated(run: Callable[[], StageResult]) -> Iterator[dg.AssetCheckResult]:
    """Run a stage; on a failed gate report every check, then fail the step.

    Use as `result = yield from gated(lambda: run_x(...))`.
    """
    try:
        return run()
    except GateFailed as exc:
        for o in exc.outcomes:
            yield to_result(o)
        raise dg.Failure(description=str(exc)) from None
