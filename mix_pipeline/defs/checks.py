"""Quality gates as Dagster asset checks.

The checks are evaluated inside each stage (core.quality) on the staged output, before it is
published; the asset reports each outcome as an AssetCheckResult on the partition it ran for,
with the observed value as a number where it is one (so the UI can plot it), the expected band and
examples. When an error check fails the stage publishes nothing: the asset reports every outcome
and yields no output, so nothing is materialized, the steps after it in the run are skipped (their
checks read "Skipped", not "Execution failed") and the run succeeds; the failed error-severity
evaluation on the partition is the record of the refusal (defs/plan.py `refusal` reads it, and
holds the step). Only error-severity checks block; warn-only checks (drift) are labelled as such.

Why not Dagster's own `blocking=True`: it fails the step when a blocking check fails, so the run
fails, and a failed run resolves every check it had planned but never evaluated (those of the
skipped steps after it: `filtered`'s four when `raw` is refused) to "Execution failed", which
reads as those gates failing; and the failed step prints a stack of Dagster internals for an
expected refusal. Blocking is done here instead, by not publishing.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Iterator

import dagster as dg

from mix_pipeline.core.gates.checks import CHECKS, CheckOutcome, GateFailed, checks_for
from mix_pipeline.core.stages.base import StageResult
from mix_pipeline.defs.metadata import markdown_table


def check_specs(stage: str, partitions_def: dg.PartitionsDefinition | None = None) -> list[dg.AssetCheckSpec]:
    """One spec per check of a stage (its asset has the stage's name), partitioned like the asset so
    each evaluation is recorded on the partition it ran for (a preview feature in Dagster 1.13;
    its warning is silenced here). Not `blocking` to Dagster: `gated` blocks (see the module's
    docstring); the description says which checks block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(name, asset=stage, blocking=False, partitions_def=partitions_def,
                              description=f"Guards against {CHECKS[name].guards}. " + (
                                  "Blocking by default: when it fails, the stage publishes nothing and what comes after it "
                                  "does not run." if CHECKS[name].severity == "error" else "Warns only by default."))
            for name in checks_for(stage)
        ]


def _number(value) -> dg.MetadataValue | None:
    """A number as a numeric metadata value (numpy scalars too), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return dg.MetadataValue.int(int(value)) if isinstance(value, numbers.Integral) else dg.MetadataValue.float(float(value))


def _readable(value) -> str:
    """An observed value as one line of text: per-filter or per-source values as "a: 0.5; b: 0.02"
    (JSON would hide behind the UI's "[Show JSON]")."""
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_readable(v)}" for key, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_readable(v) for v in value) or "none"
    if isinstance(value, float) or (isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral))):
        return f"{float(value):.4g}"
    return "" if value is None else str(value)


def to_result(o: CheckOutcome) -> dg.AssetCheckResult:
    number = _number(o.observed)
    observed = number if number is not None else dg.MetadataValue.text(_readable(o.observed))
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
    """Run a stage; on a failed gate log one line, report every check and return None.

    Use as `result = yield from gated(lambda: run_x(...))` then `if result is None: return` in an
    asset declared with `output_required=False`: a refused stage yields no output, so nothing is
    materialized and the steps after it in the run are skipped (see the module's docstring).
    """
    try:
        return run()
    except GateFailed as exc:
        context = dg.AssetExecutionContext.get()
        context.log.error(str(exc))
        for o in exc.outcomes:
            yield to_result(o)
        # A check the stage never got to (a mixture that cannot be planned is checked for its
        # weights only) still owes Dagster its output, which is what a result yields: without an
        # evaluation its planned record resolves to "Skipped", as for a step that did not run.
        reported = {o.name for o in exc.outcomes}
        for key in sorted(context.selected_asset_check_keys, key=lambda k: k.name):
            if key.name not in reported:
                yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
        return None
