import random

import pyarrow.parquet as pq
from datatrove.data import Document

from mix_pipeline.core.dedup import SignatureWriter, cluster_signatures


def random_text(seed: int, words: int = 300) -> str:
    rng = random.Random(seed)
    return " ".join(f"word{rng.randrange(20_000)}" for _ in range(words))


def _signatures(tmp_path, source, docs):
    out = tmp_path / "sigs" / source
    step = SignatureWriter(str(out), source=source, num_perm=128, bands=32, ngram=5, seed=1)
    list(step.run(iter(Document(text=t, id=i, metadata={}) for i, t in docs)))
    return sorted(str(p) for p in out.glob("*.parquet"))


def _edit(text: str, every: int = 60) -> str:
    words = text.split(" ")
    return " ".join("changed" if i % every == 7 else w for i, w in enumerate(words))


def test_exact_near_and_cross_source_duplicates_with_priority(tmp_path):
    base = [random_text(i) for i in range(30)]
    web = [(f"w{i:02d}", t) for i, t in enumerate(base)]
    web += [("x-exact", base[0]), ("x-near", _edit(base[1])), ("x-from-book", base[2] + " one more line")]
    books = [("b-original", base[2])]
    files = _signatures(tmp_path, "web", web) + _signatures(tmp_path, "books", books)
    out = tmp_path / "clusters.parquet"
    stats = cluster_signatures(files, {"books": 0, "web": 1}, str(out), threshold=0.8, exact=True,
                               duckdb_temp_dir=str(tmp_path / "tmp"))
    rows = {(r["source"], r["id"]): r for r in pq.read_table(out).to_pylist()}
    assert len(rows) == len(web) + len(books)
    # Within a source the lowest id survives.
    assert rows[("web", "x-exact")]["fate"] == "duplicate" and rows[("web", "x-exact")]["duplicate_of"] == "w00"
    assert rows[("web", "x-exact")]["match"] == "exact"
    assert rows[("web", "x-near")]["fate"] == "duplicate" and rows[("web", "x-near")]["duplicate_of"] == "w01"
    assert rows[("web", "x-near")]["match"] == "near"
    # Across sources priority decides: the book wins over both web copies of it.
    assert rows[("books", "b-original")]["fate"] == "kept"
    assert rows[("web", "w02")]["duplicate_of_source"] == "books"
    assert rows[("web", "x-from-book")]["duplicate_of"] == "b-original"
    assert rows[("books", "b-original")]["cluster_size"] == 3
    kept = {k for k, r in rows.items() if r["fate"] == "kept"}
    assert kept == {("web", f"w{i:02d}") for i in range(30) if i != 2} | {("books", "b-original")}
    assert (stats.duplicates, stats.exact_duplicates, stats.near_duplicates) == (4, 2, 2)
    assert stats.max_cluster_size == 3


def test_disabled_matching_keeps_everything(tmp_path):
    docs = [("a", random_text(1)), ("b", random_text(1))]
    files = _signatures(tmp_path, "web", docs)
    out = tmp_path / "c.parquet"
    stats = cluster_signatures(files, {"web": 0}, str(out), threshold=None, exact=False, duckdb_temp_dir=str(tmp_path / "t"))
    assert stats.duplicates == 0
    assert {r["fate"] for r in pq.read_table(out).to_pylist()} == {"kept"}


def test_remove_false_keeps_every_copy_but_records_its_survivor(tmp_path):
    base = [random_text(i) for i in range(10)]
    docs = [(f"w{i:02d}", t) for i, t in enumerate(base)] + [("x-exact", base[0]), ("x-near", _edit(base[1]))]
    files = _signatures(tmp_path, "web", docs)
    out = tmp_path / "c.parquet"
    stats = cluster_signatures(files, {"web": 0}, str(out), threshold=0.8, exact=True,
                               duckdb_temp_dir=str(tmp_path / "t"), remove=False)
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert {r["fate"] for r in rows.values()} == {"kept"}
    assert (rows["x-exact"]["duplicate_of"], rows["x-exact"]["match"]) == ("w00", "exact")
    assert (rows["x-near"]["duplicate_of"], rows["x-near"]["match"]) == ("w01", "near")
    assert rows["w05"]["duplicate_of"] is None
    assert (stats.exact_duplicates, stats.near_duplicates) == (1, 1)
