"""The quality model in a recipe: which sources it scores, quality bucket names (`web@high`), the
cross-checks of its settings at load, every classifier filter bound to its model file, and the
fingerprint of that file, so a retrained model reruns the filtered stage of the sources it scores.

Buckets split a scored source by score (`web@high`), so a mixture can weight the best of a source
up and the rest down; core/mixing/quality_buckets.py writes them.
"""

from __future__ import annotations

import hashlib
import os

from mix_pipeline.core.filters.quality_model import QualityClassifierFilter, model_path
from mix_pipeline.core.filters.registry import QUALITY_CLASSIFIER

BUCKET_SEPARATOR = "@"
FILTER_NAME = QUALITY_CLASSIFIER


def scored_sources(recipe) -> list[str]:
    return [s for s, spec in recipe.sources.items() if any(f.name == FILTER_NAME for f in spec.filters)]


def split_bucket(name: str) -> tuple[str, str | None]:
    source, sep, bucket = name.partition(BUCKET_SEPARATOR)
    return source, (bucket if sep else None)


def base_source(name: str) -> str:
    return split_bucket(name)[0]


def bucket_error(recipe, name: str) -> str | None:
    """Why `name` (`source@bucket`) is not a usable mixture source, or None."""
    source, bucket = split_bucket(name)
    if source not in recipe.sources:
        return f"unknown source '{source}' (sources: {', '.join(recipe.sources)})"
    if recipe.quality_model is None:
        return "quality buckets need a top-level quality_model section"
    if source not in scored_sources(recipe):
        return f"source '{source}' has no quality_classifier filter, so its documents carry no score"
    if bucket not in recipe.quality_model.buckets:
        return f"unknown bucket '{bucket}' (buckets: {', '.join(recipe.quality_model.buckets)})"
    return None


def check_recipe(recipe) -> None:
    """Cross-checks of the quality model's settings; raises ValueError with the key's path."""
    spec = recipe.quality_model
    for source in scored_sources(recipe):
        f = next(f for f in recipe.sources[source].filters if f.name == FILTER_NAME)
        try:
            QualityClassifierFilter(**f.params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sources.{source}.filters.quality_classifier: {exc}") from None
        if spec is None and not f.params.get("model"):
            raise ValueError(f"sources.{source}.filters.quality_classifier: needs a top-level quality_model "
                             "section (or a 'model' file of its own)")
    if spec is None:
        return
    for key, names in (("references", spec.references), ("score", spec.score or [])):
        for s in names:
            if s not in recipe.sources:
                raise ValueError(f"quality_model.{key}: unknown source '{s}' (sources: {', '.join(recipe.sources)})")
    if not spec.model and not spec.negatives_from(recipe):
        raise ValueError("quality_model.score: name the sources to sample negatives from "
                         "(no source has a quality_classifier filter)")
    overlap = set(spec.references) & set(spec.negatives_from(recipe))
    if overlap:
        raise ValueError(f"quality_model: {', '.join(sorted(overlap))} cannot be both a reference and a scored source")
    for name, mix in recipe.mixtures.items():
        drawn = mix.source_names(recipe.sources)
        for s in drawn:
            if BUCKET_SEPARATOR in s and base_source(s) in drawn:
                raise ValueError(f"mixtures.{name}: draws from '{base_source(s)}' and its bucket '{s}'; "
                                 "weight the whole source or its buckets, not both")
            if BUCKET_SEPARATOR in s and mix.outputs.tokenized:
                raise ValueError(f"mixtures.{name}.outputs.tokenized: not available for mixtures of quality buckets")


def bind_models(recipe):
    """The recipe with every quality_classifier filter pointed at its model file (resolved)."""
    if not scored_sources(recipe):
        return recipe
    sources = dict(recipe.sources)
    for source in scored_sources(recipe):
        spec = sources[source]
        filters = []
        for f in spec.filters:
            if f.name == FILTER_NAME:
                own = f.params.get("model")
                f = f.model_copy(update={"params": {**f.params, "model": recipe.resolve(own) if own else model_path(recipe)}})
            filters.append(f)
        sources[source] = spec.model_copy(update={"filters": filters})
    return recipe.model_copy(update={"sources": sources})


def filter_fingerprint(recipe, source: str) -> str | None:
    """The sha256 of the model file a source's classifier reads (None when it has none), so a
    retrained model reruns the filtered stage of the sources it scores."""
    for f in recipe.sources[source].filters:
        if f.name == FILTER_NAME:
            path = f.params.get("model") or model_path(recipe)
            if not os.path.exists(path):
                return "missing"
            with open(path, "rb") as fh:
                return hashlib.sha256(fh.read()).hexdigest()
    return None
