"""Writing a mixture: rows in output order whatever the sort ranges, shards and row groups cut at
fixed row counts whatever batches arrive."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mix_pipeline.core.io.documents import DEDUPLICATED_SCHEMA
from mix_pipeline.core.mixing import writer
from mix_pipeline.core.mixing.splits import SPLITS
from mix_pipeline.core.mixing.writer import ShardWriter, write_mixture


def _documents(folder, source: str, files: int, rows: int) -> list[str]:
    """`files` deduplicated shards of `rows` documents each, in row groups of 7."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for f in range(files):
        ids = [f"{source}-{f}-{r}" for r in range(rows)]
        table = pa.table({"id": ids, "text": [f"text of {i} " * (1 + len(i) % 5) for i in ids],
                          "source": [source] * rows, "domain": [None] * rows,
                          "metadata": ['{"k": 1}'] * rows, "n_tokens": list(range(rows))},
                         schema=DEDUPLICATED_SCHEMA)
        paths.append(str(folder / f"part-{f:05d}.parquet"))
        pq.write_table(table, paths[-1], row_group_size=7)
    return paths


def _selection(files: dict[str, list[str]], rows: int, seed: int) -> pa.Table:
    """Some rows of every file, a few twice (a second epoch), with keys that tie across sources."""
    rng = np.random.default_rng(seed)
    out = []
    for s, paths in sorted(files.items()):
        for f in range(len(paths)):
            for r in sorted(rng.choice(rows, rows // 2, replace=False).tolist()):
                for repeat in range(1 + (r % 4 == 0)):
                    out.append({"source": s, "file": f, "row": r, "repeat": repeat, "units": 10 + r, "tokens": 10 + r,
                                "split": SPLITS[(r + f) % 3],
                                "order_key": int(rng.integers(0, 40)) - 20})  # few keys: many ties
    return pa.Table.from_pylist(out, pa.schema([
        ("source", pa.string()), ("file", pa.int32()), ("row", pa.int32()), ("repeat", pa.int32()),
        ("units", pa.int64()), ("tokens", pa.int64()), ("split", pa.string()), ("order_key", pa.int64())]))


def _write(tmp_path, name, files, selection, shard_rows=25) -> dict[str, list[bytes]]:
    out = tmp_path / name
    splits = write_mixture(selection, files, str(out), shard_rows, str(tmp_path / "scratch"))
    assert not os.listdir(tmp_path / "scratch"), "range files are removed"
    return {s: [(out / f).read_bytes() for f in splits[s]["files"]] for s in SPLITS}


@pytest.fixture
def inputs(tmp_path):
    files = {s: _documents(tmp_path / "docs" / s, s, 3, 30) for s in ("books", "web")}
    return files, _selection(files, 30, seed=1)


def test_rows_come_out_in_key_order_the_same_bytes_whatever_the_sort_ranges(tmp_path, inputs, monkeypatch):
    files, selection = inputs
    one_range = _write(tmp_path, "one", files, selection)
    monkeypatch.setattr(writer, "SORT_RANGE_TOKENS", 50)  # ~10 ranges per split
    train = selection.filter(pc.equal(selection["split"], "train"))
    assert writer.sort_ranges(train).max() >= 5
    many_ranges = _write(tmp_path, "many", files, selection)
    assert many_ranges == one_range

    # The order is (order_key, source, id, epoch), as the recipe's seed decides it.
    expect = sorted(({"src": r["source"], "id": f"{r['source']}-{r['file']}-{r['row']}", **r}
                     for r in selection.to_pylist() if r["split"] == "train"),
                    key=lambda r: (r["order_key"], r["src"], r["id"], r["repeat"]))
    got = pa.concat_tables(pq.read_table(tmp_path / "many" / "train" / f) for f in sorted(os.listdir(tmp_path / "many" / "train")))
    assert list(zip(got["id"].to_pylist(), got["epoch"].to_pylist())) == [(r["id"], r["repeat"]) for r in expect]


def test_sort_ranges_keep_equal_keys_together_and_follow_key_order(monkeypatch):
    keys = np.array([5, 1, 5, 3, 3, 9, 1, 5], np.int64)
    table = pa.table({"order_key": keys, "tokens": np.full(8, 10, np.int64)})
    assert (writer.sort_ranges(table) == 0).all()  # the default range holds this many tokens
    monkeypatch.setattr(writer, "SORT_RANGE_TOKENS", 20)
    ranges = writer.sort_ranges(table)
    for k in np.unique(keys):
        assert len(set(ranges[keys == k])) == 1
    by_key = ranges[np.argsort(keys, kind="stable")]
    assert (np.diff(by_key) >= 0).all() and by_key.max() >= 2


def test_shards_and_row_groups_are_cut_at_fixed_rows_whatever_the_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "ROW_GROUP_ROWS", 4)
    table = pa.table({"id": [str(i) for i in range(23)], "text": ["x" * i for i in range(23)]})
    written = []
    for cuts in ([23], [1, 5, 9, 2, 6], [3] * 7 + [2]):
        folder = tmp_path / "-".join(map(str, cuts))
        folder.mkdir()
        shards, start = ShardWriter(str(folder), 10, jsonl=True), 0
        for n in cuts:
            shards.write(table.slice(start, n).to_batches()[0])
            start += n
        shards.close()
        assert shards.rows == 23
        groups = [[pq.ParquetFile(f).metadata.row_group(g).num_rows for g in range(pq.ParquetFile(f).num_row_groups)]
                  for f in shards.files]
        assert groups == [[4, 4, 2], [4, 4, 2], [3]]
        written.append([open(f, "rb").read() for f in shards.files + shards.jsonl_files])
    assert written[0] == written[1] == written[2]


def test_each_split_written_on_its_own_from_its_saved_selection_is_the_same_bytes(tmp_path, inputs):
    """The mixture stage's tasks write one split each from the selection the planning task saved
    (core/stages/mixture.py): the same shards and summary as writing the whole selection at once,
    with the planner's dictionary-encoded columns read back from Parquet."""
    files, selection = inputs
    out = tmp_path / "together"
    together = write_mixture(selection, files, str(out), 25, str(tmp_path / "scratch"))
    for name in ("source", "split"):
        selection = selection.set_column(selection.schema.get_field_index(name), name,
                                         pc.dictionary_encode(selection[name]))
    apart = tmp_path / "apart"
    for split in reversed(SPLITS):  # in any order
        saved = tmp_path / f"selection-{split}.parquet"
        pq.write_table(selection.filter(pc.equal(selection["split"], split)), saved)
        summary = writer.write_split(split, pq.read_table(saved), files, str(apart), 25, str(tmp_path / "scratch"))
        assert summary == together[split]
        assert [(apart / f).read_bytes() for f in summary["files"]] == [(out / f).read_bytes() for f in summary["files"]]


def test_splits_disjoint_names_every_document_in_two_splits_and_only_those(tmp_path):
    """The check streams the largest split past the others: a document in train and validation,
    one in validation and test, and one repeated within train (epochs) — only the first two leak."""
    import duckdb

    from mix_pipeline.core.gates.checks import _splits_disjoint

    def split(name: str, rows: list[tuple[str, str]]) -> list[str]:
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"source": [s for s, _ in rows], "id": [i for _, i in rows]}), path)
        return [str(path)]

    train = [("web", f"w{i}") for i in range(200)] + [("web", "w1"), ("books", "b0")]
    parts = {"train": split("train", train),
             "validation": split("validation", [("books", "b0"), ("web", "v1"), ("web", "v2")]),
             "test": split("test", [("web", "v2"), ("web", "t1")])}
    with duckdb.connect() as con:
        check = _splits_disjoint(con, parts, {})
        assert (check.passed, check.observed) == (False, 2)
        assert [e["id"] + " " + e["snippet"] for e in check.examples] == [
            "books/b0 in train,validation", "web/v2 in test,validation"]
        clean = {"train": parts["train"], "validation": split("v_clean", [("web", "v1")]), "test": []}
        assert _splits_disjoint(con, clean, {}).passed
