import random

import pyarrow.parquet as pq
from datatrove.data import Document

from mix_pipeline.core.dedup.generation import dedup_generation
from mix_pipeline.core.dedup.signatures import SignatureWriter


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
    stats = dedup_generation("default", files, [], {"books": 0, "web": 1}, str(tmp_path / "clusters"),
                             str(tmp_path / "index"), threshold=0.8, exact=True, duckdb_temp_dir=str(tmp_path / "tmp"))
    rows = {(r["source"], r["id"]): r for f in sorted((tmp_path / "clusters").rglob("*.parquet"))
            for r in pq.read_table(f).to_pylist()}
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
    # The index holds exactly the keepers, with their signatures.
    index = [r for f in sorted((tmp_path / "index").rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert {(r["source"], r["id"]) for r in index} == kept
    assert all(len(r["signature"]) == 128 for r in index)


def test_a_later_generation_never_displaces_earlier_keepers(tmp_path):
    base = [random_text(100 + i) for i in range(10)]
    first = _signatures(tmp_path / "g1", "web", [(f"a{i}", t) for i, t in enumerate(base)])
    dedup_generation("2024-01", first, [], {"web": 0, "books": 1}, str(tmp_path / "clusters"), str(tmp_path / "index"),
                     threshold=0.8, exact=True, duckdb_temp_dir=str(tmp_path / "tmp"))
    # Generation 2: an exact copy and a near copy of generation-1 documents (with ids that sort
    # first and a source that ranks first, so only the generation order can keep the old ones),
    # two near copies of each other, and a new document.
    twin = random_text(999)
    second = _signatures(tmp_path / "g2", "web", [("0-exact", base[3]), ("0-near", _edit(base[4])),
                                                  ("b-twin", twin), ("c-twin", _edit(twin)), ("d-new", random_text(555))])
    index = sorted(str(p) for p in (tmp_path / "index").rglob("*.parquet"))
    stats = dedup_generation("2024-02", second, index, {"web": 0, "books": 1}, str(tmp_path / "clusters"),
                             str(tmp_path / "index"), threshold=0.8, exact=True, duckdb_temp_dir=str(tmp_path / "tmp"))
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "clusters" / "web" / "2024-02.parquet").to_pylist()}
    assert rows["0-exact"]["fate"] == "duplicate" and rows["0-exact"]["duplicate_of"] == "a3"
    assert rows["0-exact"]["duplicate_of_snapshot"] == "2024-01" and rows["0-exact"]["match"] == "exact"
    assert rows["0-near"]["duplicate_of"] == "a4" and rows["0-near"]["match"] == "near"
    assert rows["b-twin"]["fate"] == "kept" and rows["c-twin"]["duplicate_of"] == "b-twin"
    assert rows["d-new"]["fate"] == "kept"
    assert stats.documents == 5 and stats.duplicates == 3
    # Generation 1's verdicts are untouched; the index grew by this generation's keepers only.
    assert {r["id"] for r in pq.read_table(tmp_path / "index" / "web" / "2024-02.parquet").to_pylist()} == {"b-twin", "d-new"}


def test_disabled_matching_keeps_everything(tmp_path):
    docs = [("a", random_text(1)), ("b", random_text(1))]
    files = _signatures(tmp_path, "web", docs)
    stats = dedup_generation("default", files, [], {"web": 0}, str(tmp_path / "c"), str(tmp_path / "i"),
                             threshold=None, exact=False, duckdb_temp_dir=str(tmp_path / "t"))
    assert stats.duplicates == 0
    assert {r["fate"] for r in pq.read_table(tmp_path / "c" / "web" / "default.parquet").to_pylist()} == {"kept"}


def test_remove_false_keeps_every_copy_but_records_its_survivor(tmp_path):
    base = [random_text(i) for i in range(10)]
    docs = [(f"w{i:02d}", t) for i, t in enumerate(base)] + [("x-exact", base[0]), ("x-near", _edit(base[1]))]
    files = _signatures(tmp_path, "web", docs)
    stats = dedup_generation("default", files, [], {"web": 0}, str(tmp_path / "c"), str(tmp_path / "i"),
                             threshold=0.8, exact=True, duckdb_temp_dir=str(tmp_path / "t"), remove=False)
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "c" / "web" / "default.parquet").to_pylist()}
    assert {r["fate"] for r in rows.values()} == {"kept"}
    assert (rows["x-exact"]["duplicate_of"], rows["x-exact"]["match"]) == ("w00", "exact")
    assert (rows["x-near"]["duplicate_of"], rows["x-near"]["match"]) == ("w01", "near")
    assert rows["w05"]["duplicate_of"] is None
    assert (stats.exact_duplicates, stats.near_duplicates) == (1, 1)
    # Only survivors go into the index that later snapshots are compared against.
    assert len(pq.read_table(tmp_path / "i" / "web" / "default.parquet")) == 10
