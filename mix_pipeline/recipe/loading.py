"""Loading a recipe: read the YAML file, validate it against the schema, and turn every problem
into one RecipeError line that names the recipe key (`mixtures.m.weights.wiki: unknown source`).

A loaded recipe knows its folder (relative paths resolve against it) and the SHA-256 of its
bytes; its paths are checked before it is returned (paths.py).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mix_pipeline.core.filters.quality_recipe import bind_models
from mix_pipeline.errors import RecipeError
from mix_pipeline.recipe.paths import check_data_root, check_inside, check_source_paths
from mix_pipeline.recipe.schema import Recipe


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after", "function-before"))
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    # Errors raised inside a dict-level validator carry their own sub-path ("web: ...").
    text = f"{loc}: {msg}" if loc else msg
    # A key may hold control characters (a source named "\n"): escaped, the message stays one line.
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)


def parse_recipe(data: Any, base_dir: str, sha256: str = "", origin: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: the recipe must be a YAML mapping")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise RecipeError(f"{origin}: {_format_error(first)}{more}") from None
    recipe = bind_models(recipe.model_copy(update={"base_dir": base_dir, "sha256": sha256}))
    for key, path in recipe.path_keys():
        check_inside(recipe, key, path, origin)
    check_data_root(recipe, origin)
    return recipe


def load_recipe(path: str | os.PathLike, check_paths: bool = True) -> Recipe:
    """Load and validate a recipe file; raise RecipeError with a one-line message."""
    path = os.path.abspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror})") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{where}") from None
    recipe = parse_recipe(data, os.path.dirname(path), hashlib.sha256(raw).hexdigest(), origin=path)
    if check_paths:
        check_source_paths(recipe, origin=path)
    return recipe
