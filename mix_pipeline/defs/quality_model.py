"""The quality classifier's model as an asset: trained from the recipe (or the file it names),
with the score distribution of every scored source × snapshot and the share each threshold
would keep, so the quality/volume trade-off is visible before a threshold is chosen."""

import hashlib

import dagster as dg

from mix_pipeline.core.filters import quality_model as qm
from mix_pipeline.core.filters import quality_training
from mix_pipeline.core.filters.quality_recipe import scored_sources
from mix_pipeline.core.filters.quality_reports import score_report
from mix_pipeline.defs.metadata import INPUT_FINGERPRINT, markdown_table
from mix_pipeline.names import QUALITY_MODEL, partition_key
from mix_pipeline.recipe import Recipe

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(counts: list[int]) -> str:
    top = max(counts) or 1
    return "".join(_BARS[min(len(_BARS) - 1, int(c / top * (len(_BARS) - 1)))] if c else "·" for c in counts)


def upstream_of_filtered(recipe: Recipe) -> list[str]:
    """The filtered stage reads the model when a source has a quality_classifier filter."""
    return [QUALITY_MODEL] if recipe.quality_model is not None and scored_sources(recipe) else []


def distribution_rows(report: list[dict]) -> list[dict]:
    return [{"source": r["source"], "snapshot": r["snapshot"], "documents": r["documents"], "mean_score": r["mean_score"],
             "histogram 0→1": sparkline(r["histogram"]), "counts per 0.1": " ".join(map(str, r["histogram"]))}
            for r in report]


def kept_share_rows(report: list[dict]) -> list[dict]:
    return [{"source": r["source"], "snapshot": r["snapshot"], **{f"≥{t}": v for t, v in r["kept_share"].items()}}
            for r in report]


def build(recipe: Recipe) -> list:
    if recipe.quality_model is None:
        return []

    @dg.asset(
        name=QUALITY_MODEL,
        group_name="quality",
        kinds={"scikit-learn"},
        # The planner (defs/plan.py) retrains it, for the CLI and the daemon, when its training inputs change.
        description="The quality classifier (hashed n-gram naive Bayes, scikit-learn): trained from the recipe's "
        "reference sources against a seeded sample of the raw input of the sources it scores, or the model file "
        "the recipe names. Metadata: score distribution per source and snapshot, and the share of documents each "
        "threshold would keep.",
    )
    def quality_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        path = qm.model_path(recipe)
        if quality_training.needs_training(recipe):
            model = quality_training.train(recipe, log=context.log.info)
            sha = qm.write_model(model, path)
        else:
            model = qm.load_model(path)
            with open(path, "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
        report = score_report(recipe, model)
        info = model.info
        return dg.MaterializeResult(
            data_version=dg.DataVersion(sha),
            metadata={
                "path": dg.MetadataValue.path(path),
                "model_sha256": sha,
                "trained": dg.MetadataValue.bool(quality_training.needs_training(recipe)),
                "references": dg.MetadataValue.json(info.get("references", [])),
                "negatives_from": dg.MetadataValue.json(info.get("negatives_from", [])),
                "positives": dg.MetadataValue.int(int(info.get("positives", 0))),
                "negatives": dg.MetadataValue.int(int(info.get("negatives", 0))),
                "score_distribution": markdown_table(distribution_rows(report)),
                "kept_share_by_threshold": markdown_table(kept_share_rows(report)),
                **{f"mean_score/{partition_key(r['source'], r['snapshot'])}": dg.MetadataValue.float(float(r["mean_score"] or 0.0))
                   for r in report},
                INPUT_FINGERPRINT: info.get("fingerprint", sha),
            },
        )

    return [quality_model]
