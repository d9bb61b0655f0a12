"""Quality gates as Dagster asset checks.

The checks are evaluated inside each stage (core.quality) on the staged output, before it is
published; the asset reports each outcome as a blocking AssetCheckResult. When an error check
fails, the stage publishes nothing, the asset fails, and downstream steps of the run are skipped.
Automated runs additionally wait for upstream blocking checks (AUTOMATION).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dagster as dg

from mix_pipeline.core.quality import CHECKS, CheckOutcome, GateFailed, checks_for
from mix_pipeline.core.stages import StageResult
from mix_pipeline.defs.metadata import markdown_table

# Eager, but never past a failed blocking check upstream (the cross-run half of the gate).
AUTOMATION = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def check_specs(asset: str, stage: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=True, description=f"Guards against {CHECKS[name].guards}.")
        for name in checks_for(stage)
    ]


def to_result(o: CheckOutcome) -> dg.AssetCheckResult:
    metadata = {
        "observed": dg.MetadataValue.json(o.observed) if isinstance(o.observed, (dict, list)) else dg.MetadataValue.text(str(o.observed)),
        "expected": dg.MetadataValue.text(o.expected),
        "message": dg.MetadataValue.text(o.message),
    }
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
