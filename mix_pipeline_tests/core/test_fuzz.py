"""Hypothesis fuzzing of the readers and the recipe loader: whatever the bytes or the YAML,
the reader accounts for every record without raising, and the loader returns a Recipe or
raises RecipeError (one line), never another exception."""

from __future__ import annotations

import json
import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mix_pipeline.core.io.readers import SourceReader
from mix_pipeline.recipe import Recipe, RecipeError, load_recipe

# Random examples locally (where a new failure is found), a fixed draw under CI (`CI` set), so a
# landing never hangs on the luck of the draw; a case found locally goes in as an @example.
FUZZ = settings(max_examples=int(os.environ.get("MIX_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow], derandomize=bool(os.environ.get("CI")))

# JSON as orjson reads it: 64-bit integers, no lone surrogates (a record outside that is malformed_json).
chars = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
                | chars | st.sampled_from(["", " ", "\x00", "ok\x00"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(chars, inner, max_size=3),
                           max_leaves=8)
records = st.fixed_dictionaries({}, optional={"id": json_values, "text": json_values | chars, "url": json_values})
lines = st.one_of(
    records.map(lambda r: json.dumps(r).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.text(max_size=40).map(lambda t: t.replace("\n", "").encode("utf-8", "surrogatepass")),
)


def _reader(root: str, fmt: str = "jsonl", limit: int = 10_000_000) -> SourceReader:
    return SourceReader(files=[], root=root, source="s", domain="s", fmt=fmt, text_field="text", id_field="id",
                        quarantine_writer=None, max_document_bytes=limit)


def _expected_document(line: bytes) -> str | None:
    """The text a line should yield as a document, or None when it should be quarantined."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or isinstance(record.get("id"), (dict, list)):
        return None
    text = record.get("text")
    if not isinstance(text, str) or "\x00" in text or not text.strip():
        return None
    return text


@FUZZ
@given(st.lists(lines, max_size=12), st.sampled_from([b"\n", b"\r\n"]), st.integers(20, 200))
# A plain .jsonl whose first line begins with zstd's (or gzip's) magic number is still read line by line.
@example([b"(\xb5/\xfd", b"{}"], b"\n", 20)
@example([b"\x1f\x8b", b"{}"], b"\n", 20)
def test_jsonl_reader_accounts_for_every_line(body, newline, limit):
    data = newline.join(body) + (newline if body else b"")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "f.jsonl")
        with open(path, "wb") as f:
            f.write(data)
        out = list(_reader(folder, limit=limit).read_file(path))
    assert all(isinstance(ok, bool) and (ok or d.metadata["reason"]) for ok, d in out)
    if b"\x00" in data[:8192]:
        assert [(ok, d.metadata["reason"]) for ok, d in out] == [(False, "binary_file")]
        return
    nonblank = [line for line in data.split(b"\n") if line.strip() or len(line) > limit]
    if not nonblank:
        assert [(ok, d.metadata["reason"]) for ok, d in out] == [(False, "empty_file")]
        return
    assert len(out) == len(nonblank)  # documents + quarantined == records read
    for (ok, doc), line in zip(out, nonblank):
        if len(line) > limit:
            assert not ok and doc.metadata["reason"] == "document_too_large"
            continue
        expected = _expected_document(line)
        assert ok == (expected is not None), (line, doc.metadata)
        if ok:
            assert doc.text == expected


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["text", "jsonl", "parquet"]))
def test_any_bytes_in_any_format_never_raise(data, fmt):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "f.parquet" if fmt == "parquet" else "f.jsonl.gz" if data[:1] == b"\x1f" else "f.x")
        with open(path, "wb") as f:
            f.write(data)
        out = list(_reader(folder, fmt=fmt).read_file(path))
    assert out and all(ok or d.metadata["reason"] for ok, d in out)
    if fmt in ("text", "parquet"):
        assert len(out) == 1


parquet_columns = st.sampled_from([
    pa.array(["a", "b", "c"]), pa.array(["x", None, " "]), pa.array([1, 2, 3]), pa.array([b"a", b"b", b"c"]),
    pa.array([["a"], [], None]), pa.array([None, None, None]), pa.array([1.5, None, 2.0]),
    pa.array(["a", "a", "b"]).dictionary_encode(), pa.array(["l", "m", "n"], pa.large_string()),
    pa.array([{"k": 1}, None, {"k": 2}]),
])


@FUZZ
@given(st.dictionaries(st.sampled_from(["id", "text", "meta", "body"]), parquet_columns, max_size=4))
def test_parquet_reader_accounts_for_every_row_or_the_file(columns):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "f.parquet")
        pq.write_table(pa.table(columns) if columns else pa.table({"x": pa.array([], pa.int64())}), path)
        out = list(_reader(folder, fmt="parquet").read_file(path))
    text = columns.get("text")
    string_like = text is not None and (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)
                                        or pa.types.is_null(text.type) or pa.types.is_dictionary(text.type))
    if string_like:
        assert len(out) == 3  # one outcome per row
    else:
        assert len(out) == 1 and not out[0][0]
        assert out[0][1].metadata["reason"] in ("missing_text_column", "text_column_not_string", "empty_file")


# ---- the recipe loader -----------------------------------------------------------------------------
GOOD = {
    "name": "t",
    "sources": {"web": {"path": "web/*.jsonl", "filters": ["gopher_quality", {"language": {"languages": ["en"]}}]},
                "books": {"path": "books/*.jsonl", "format": "jsonl", "max_document_bytes": 1000}},
    "dedup": {"priority": ["books", "web"], "minhash": {"threshold": 0.8}},
    "mixtures": {"m": {"total": 1000, "weights": {"web": 0.5, "books": 0.5}, "splits": {"validation": 0.1}}},
}
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["web", "books", "../x", "/etc", "*", "{snapshot}", "hf", "tokens", "c4", "-1", ".nan"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.sampled_from(
        ["web", "books", "path", "weights", "total", "filters", "checks", "name", "sources"]), inner, max_size=3),
    max_leaves=10,
)


def _paths(tree, prefix=()):
    """Every key path of a nested mapping/list."""
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, prefix + (i,))


def _replace(tree, path, value):
    if not path:
        return value
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    copy[path[0]] = _replace(copy[path[0]], path[1:], value)
    return copy


@st.composite
def mutated_recipes(draw):
    """The good recipe with a few sub-trees replaced by arbitrary values, or anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(yaml_values)
    tree = GOOD
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(tree))))
        tree = _replace(tree, path, draw(yaml_values))
    return tree


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("fuzz_recipe")
    for source in ("web", "books"):
        (root / source).mkdir()
        (root / source / "a.jsonl").write_text('{"id": "1", "text": "hello"}\n')
    return str(root)


@FUZZ
@given(data=mutated_recipes())
def test_recipe_loader_returns_a_recipe_or_a_one_line_recipe_error(folder, data):
    path = os.path.join(folder, "recipe.yaml")
    with open(path, "w") as f:
        f.write(yaml.safe_dump(data, allow_unicode=True))
    try:
        recipe = load_recipe(path)
    except RecipeError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(recipe, Recipe)


def test_the_unmutated_recipe_loads(folder):
    with open(os.path.join(folder, "recipe.yaml"), "w") as f:
        f.write(yaml.safe_dump(GOOD))
    assert load_recipe(os.path.join(folder, "recipe.yaml")).mixtures["m"].total == 1000
