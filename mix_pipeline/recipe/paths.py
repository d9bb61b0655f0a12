"""Path checks: what a recipe's paths lead to on disk, refused before anything runs.

Every path the recipe names must resolve (after `..` and symlinks) inside the recipe's folder or
an allowed root; data_root must not overlap a source's folder; and every input the recipe names
(source files, filter word lists, eval sets, models, the tokenizer) must exist and be readable.
Each refusal is a one-line RecipeError naming the recipe key.
"""

from __future__ import annotations

import fnmatch
import glob
import os

from mix_pipeline import layout
from mix_pipeline.core.filters import quality_recipe
from mix_pipeline.core.filters.decontamination import eval_set_name
from mix_pipeline.core.filters.quality_model import model_path
from mix_pipeline.core.filters.registry import path_params
from mix_pipeline.core.io.readers import not_regular
from mix_pipeline.errors import RecipeError
from mix_pipeline.names import SNAPSHOT_PLACEHOLDER
from mix_pipeline.recipe.inputs import eval_set_files, glob_base, snapshots, source_files
from mix_pipeline.recipe.schema import Recipe, SourceSpec


def _roots(recipe: Recipe) -> list[str]:
    return [os.path.realpath(recipe.base_dir)] + [
        r if "://" in r else os.path.realpath(recipe.resolve(r)) for r in recipe.allowed_roots
    ]


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def outside_roots(recipe: Recipe, path: str) -> str | None:
    """None when `path` (or, for a glob, the folder before its first wildcard) resolves inside
    the recipe's folder or an allowed root; else what it resolves to."""
    resolved = recipe.resolve(path)
    if "://" in resolved:
        inside = any("://" in r and (resolved.rstrip("/") == r.rstrip("/") or resolved.startswith(r.rstrip("/") + "/"))
                     for r in recipe.allowed_roots)
        return None if inside else resolved
    real = os.path.realpath(glob_base(resolved))
    if any(_within(real, r) for r in _roots(recipe) if "://" not in r):
        return None
    return real


def check_inside(recipe: Recipe, key: str, path: str, origin: str = "recipe") -> None:
    """Raise RecipeError when `path` (the value of `key`) leads outside the allowed folders."""
    try:
        real = outside_roots(recipe, path)
    except (ValueError, OSError) as exc:  # e.g. a NUL byte in the path
        raise RecipeError(f"{origin}: {key}: {path!r} is not a usable path ({exc})") from None
    if real is not None:
        raise RecipeError(
            f"{origin}: {key}: '{path}' resolves to {real}, outside the recipe's folder "
            f"{os.path.realpath(recipe.base_dir)} (list the folder under allowed_roots to allow it)"
        )


def check_data_root(recipe: Recipe, origin: str = "recipe") -> None:
    """Refuse a data_root that overlaps a source's folder: the same folder, a data_root the source's
    pattern can reach into (a later run would read the pipeline's own outputs), or a source inside
    a folder the pipeline writes (raw/, mixtures/, ...)."""
    root = os.path.realpath(recipe.data_root_path)
    if "://" in root:
        return
    for name, spec in recipe.sources.items():
        pattern = recipe.resolve(spec.path)
        if "://" in pattern:
            continue
        base = glob_base(pattern)
        real_base = os.path.realpath(base)
        rest = os.path.relpath(pattern, base)
        clash = None
        if real_base == root:
            clash = "is the source's folder"
        elif _within(root, real_base):
            below = os.path.relpath(root, real_base).split(os.sep)
            parts = [] if rest == "." else rest.split(os.sep)
            recursive = os.path.isdir(pattern) or any("**" in p for p in parts)
            # With `{snapshot}` or a wildcard folder, data_root's first folder below the base can match.
            first = parts[0].replace(SNAPSHOT_PLACEHOLDER, "*") if len(parts) > 1 else None
            if recursive or (first is not None and fnmatch.fnmatchcase(below[0], first)):
                clash = f"is inside the source's folder {real_base} and its path '{spec.path}' reaches into it"
        elif any(_within(real_base, os.path.join(root, d)) for d in layout.DATA_ROOT_OUTPUTS):
            clash = f"holds the source's folder {real_base} among the pipeline's outputs"
        if clash:
            raise RecipeError(f"{origin}: data_root: '{recipe.data_root}' ({root}) {clash} (sources.{name}.path); "
                              "put data_root and the sources in separate folders")


def check_file_name(key: str, path: str, origin: str = "recipe") -> None:
    """Refuse an input file whose name is not valid UTF-8: ids, provenance and the catalog name
    files in UTF-8, and writing such a name would fail mid-stage."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise RecipeError(f"{origin}: {key}: the file name '{shown}' is not valid UTF-8; rename the file") from None


def check_source_paths(recipe: Recipe, origin: str = "recipe") -> None:
    """Refuse a recipe whose inputs are missing, unreadable or lead outside the allowed folders."""
    for name, spec in recipe.sources.items():
        _check_source(recipe, name, spec, origin)
    if recipe.decontamination is not None:
        _check_eval_sets(recipe, origin)
    _check_named_files(recipe, origin)


def _check_source(recipe: Recipe, name: str, spec: SourceSpec, origin: str) -> None:
    """A source's files (every snapshot) and the files its filters read."""
    files = [f for snap in snapshots(recipe, name) for f in source_files(recipe, name, snap)]
    if not files:
        raise RecipeError(
            f"{origin}: sources.{name}.path: '{spec.path}' matches no file "
            f"(resolved to {recipe.resolve(spec.path)})"
        )
    # A symlink inside the folder, or a `..` after a wildcard, can still lead out.
    for f in files:
        check_inside(recipe, f"sources.{name}.path", f, origin)
    for f in files:
        check_file_name(f"sources.{name}.path", f, origin)
        if "://" in f:  # an object is a regular file; readability shows when a task reads it
            continue
        try:
            kind = not_regular(f)
        except OSError:
            continue  # reported as not readable below
        if kind:
            raise RecipeError(f"{origin}: sources.{name}.path: {f} is {kind}, not a regular file "
                              "(reading it could block forever); remove it or narrow the path")
    unreadable = [f for f in files if "://" not in f and not os.access(f, os.R_OK)]
    if unreadable:
        raise RecipeError(
            f"{origin}: sources.{name}.path: {len(unreadable)} file(s) are not readable, e.g. {unreadable[0]}"
        )
    for i, f in enumerate(spec.filters):
        for key, p in path_params(f.name, f.params):
            if not os.path.isfile(recipe.resolve(p)):
                raise RecipeError(
                    f"{origin}: sources.{name}.filters[{i}].{f.name}.{key}: no such file {recipe.resolve(p)}"
                )


def _check_eval_sets(recipe: Recipe, origin: str) -> None:
    """Each decontamination pattern matches a file inside the allowed folders, and no two eval
    sets share a name (drops are attributed by it)."""
    for i, pattern in enumerate(recipe.decontamination.eval_sets):
        if "://" in recipe.resolve(pattern):  # object storage
            from mix_pipeline.core.io import storage

            found = bool(storage.glob_files(recipe.resolve(pattern)))
        else:
            found = any(os.path.isfile(f) for f in glob.glob(recipe.resolve(pattern), recursive=True))
        if not found:
            raise RecipeError(
                f"{origin}: decontamination.eval_sets[{i}]: '{pattern}' matches no file (resolved to {recipe.resolve(pattern)})"
            )
    for f in eval_set_files(recipe):
        check_inside(recipe, "decontamination.eval_sets", f, origin)
    names: dict[str, str] = {}
    for f in eval_set_files(recipe):
        if eval_set_name(f) in names:
            raise RecipeError(
                f"{origin}: decontamination.eval_sets: two eval sets are named '{eval_set_name(f)}' "
                f"({names[eval_set_name(f)]} and {f}); drops are attributed by file name"
            )
        names[eval_set_name(f)] = f


def _check_named_files(recipe: Recipe, origin: str) -> None:
    """The lab's eval sets, the quality model files and the tokenizer exist."""
    for exp_name, exp in recipe.experiments.items():
        for set_name, p in exp.eval_sets.items():
            if not os.path.isfile(recipe.resolve(p)):
                raise RecipeError(f"{origin}: experiments.{exp_name}.eval_sets.{set_name}: no such file {recipe.resolve(p)}")
    if recipe.quality_model is not None and recipe.quality_model.model:
        if not os.path.isfile(recipe.resolve(recipe.quality_model.model)):
            raise RecipeError(f"{origin}: quality_model.model: no such file {recipe.resolve(recipe.quality_model.model)}")
    for name in quality_recipe.scored_sources(recipe):
        for i, f in enumerate(recipe.sources[name].filters):
            own = f.params.get("model") if f.name == quality_recipe.FILTER_NAME else None
            if own and own != model_path(recipe) and not os.path.isfile(own):
                raise RecipeError(f"{origin}: sources.{name}.filters[{i}].{f.name}.model: no such file {own}")
    if recipe.tokenizer.kind == "hf":
        tok = recipe.resolve(recipe.tokenizer.path or "")
        if not os.path.isfile(tok):
            raise RecipeError(f"{origin}: tokenizer.path: no such file {tok}")
        if recipe.tokenizer.eos_token:
            from tokenizers import Tokenizer

            if Tokenizer.from_file(tok).token_to_id(recipe.tokenizer.eos_token) is None:
                raise RecipeError(
                    f"{origin}: tokenizer.eos_token: '{recipe.tokenizer.eos_token}' is not in the vocabulary of {tok}"
                )
