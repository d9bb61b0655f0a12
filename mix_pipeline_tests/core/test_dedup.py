import os
import random
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.data import Document

from mix_pipeline.core.dedup.generation import dedup_generation
from mix_pipeline.core.dedup.pairs import owned_cells
from mix_pipeline.core.dedup.signatures import SignatureWriter, band_matrix, signature_schema
from mix_pipeline.core.stages.base import local_runner


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


def test_what_a_killed_clustering_left_behind_is_reclaimed_by_the_next(tmp_path):
    """A run killed between the phases leaves its pair files in the generation's scratch folder;
    the next clustering of that generation empties it first, and nothing is left afterwards."""
    docs = [("a", random_text(1)), ("b", random_text(1)), ("c", random_text(2))]
    files = _signatures(tmp_path, "web", docs)
    left = tmp_path / "t" / "clusters" / "default" / "pairs"
    left.mkdir(parents=True)
    (left / "00007.parquet").write_bytes(b"half a file from a killed run")
    stats = dedup_generation("default", files, [], {"web": 0}, str(tmp_path / "c"), str(tmp_path / "i"),
                             threshold=0.8, exact=True, duckdb_temp_dir=str(tmp_path / "t"))
    assert stats.exact_duplicates == 1
    assert not (tmp_path / "t" / "clusters" / "default").exists()


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


# ---- sharded clustering against a plain reference ------------------------------------------------
# Synthetic signature rows (128 permutations, 32 bands of 4), with planted exact and near copies
# within a generation, across sources and across generations; clustered by `dedup_generation`
# (pairs in N tasks) and by `reference_generation` below, written plainly: one dict per document,
# buckets as dicts, a list-based union-find.

NUM_PERM, BANDS = 128, 32
RANKS = {"books": 0, "web": 1, "o'reilly": 2}


def _random_signature(rng) -> np.ndarray:
    return rng.integers(0, 2**32, NUM_PERM, dtype=np.uint64).astype(np.uint32)


def _near(rng, sig: np.ndarray, changed: int = 8) -> np.ndarray:
    """A copy of `sig` with `changed` positions (the last ones) replaced: 120 of 128 shared."""
    out = sig.copy()
    out[NUM_PERM - changed:] = _random_signature(rng)[:changed]
    return out


def _write_docs(folder, source: str, docs: list[tuple[str, int, np.ndarray]], files: int = 2) -> list[str]:
    """Signature rows (SIGNATURE schema) of (id, content hash, signature), over `files` files."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(files):
        part = docs[k::files]
        if not part:
            continue
        sig = np.stack([s for _, _, s in part])
        table = pa.table({
            "source": pa.array([source] * len(part), pa.string()), "id": pa.array([i for i, _, _ in part]),
            "content_hash": pa.array([h for _, h, _ in part], pa.int64()), "n_chars": pa.array([100] * len(part), pa.int64()),
            "signature": pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1), pa.uint32()), NUM_PERM),
            "bands": pa.FixedSizeListArray.from_arrays(pa.array(band_matrix(sig, BANDS).reshape(-1), pa.int64()), BANDS),
        }, schema=signature_schema(NUM_PERM, BANDS))
        paths.append(os.path.join(folder, f"{k:05d}.parquet"))
        pq.write_table(table, paths[-1])
    return paths


def _generations(rng) -> list[tuple[str, dict[str, list[tuple[str, int, np.ndarray]]]]]:
    """Three generations of three sources (one with a quote in its name), each with random
    documents and planted copies: exact and near, chains, across sources, across generations,
    and pairs that share a band without being similar (candidates that fail verification)."""
    def rand(prefix, n):
        return [(f"{prefix}{i:03d}", int(rng.integers(-(2**62), 2**62)), _random_signature(rng)) for i in range(n)]

    web1, books1, quote1 = rand("w", 40), rand("b", 10), rand("q", 8)
    chain = _near(rng, web1[2][2])
    one_band = _random_signature(rng)
    one_band[:4] = web1[8][2][:4]
    web1 += [("x-exact", web1[0][1], web1[0][2]), ("x-near", 11, _near(rng, web1[1][2])), ("x-chain1", 12, chain),
             ("x-chain2", 13, _near(rng, chain, 4)), ("x-oneband", 14, one_band)]
    books1 += [("c-exact-of-web", web1[3][1], web1[3][2]), ("c-near-of-web", 15, _near(rng, web1[4][2]))]
    quote1 += [("r-near-of-web", 16, _near(rng, web1[5][2])), ("r-exact-of-book", books1[0][1], books1[0][2])]
    web2, books2 = rand("v", 30), rand("a", 6)
    twin = _random_signature(rng)
    bridge = _near(rng, web1[10][2])
    web2 += [("0-exact-old", web1[6][1], web1[6][2]), ("0-near-old-book", 21, _near(rng, books1[1][2])),
             ("0-exact-of-dropped", web1[0][1], web1[0][2]), ("t-twin", 22, twin), ("u-twin", 23, _near(rng, twin)),
             # one group matching three indexed documents: the earliest (a book) wins for both
             ("m-bridge", web1[9][1], bridge), ("n-bridge", books1[2][1], _near(rng, bridge, 4))]
    books2 += [("e-exact-old-web", web1[7][1], web1[7][2])]
    web3, quote3 = rand("z", 20), rand("p", 5)
    web3 += [("0-near-gen2", 31, _near(rng, web2[3][2])), ("0-near-both", 32, _near(rng, twin))]
    quote3 += [("0-exact-gen2", web2[4][1], web2[4][2])]
    return [("2024-01", {"web": web1, "books": books1, "o'reilly": quote1}),
            ("2024-02", {"web": web2, "books": books2}),
            ("2024-03", {"web": web3, "o'reilly": quote3})]


def _similar(x: dict, y: dict, threshold: float) -> bool:
    return np.mean(np.asarray(x["signature"]) == np.asarray(y["signature"])) >= threshold


def _pairs(new: list[dict], old: list[dict], threshold: float | None, exact: bool):
    """The reference's pairs, in node numbers (positions in priority order): (within, across,
    candidates, verified). Exact: each content hash's first document with each other one, each
    document with the earliest indexed one of its hash. Near: each bucket's first document with
    each other member (a star), every (new, indexed) pair sharing a bucket; verified."""
    within, across, candidates, verified = [], [], 0, 0
    if exact:
        first, first_old = {}, {}
        for j, o in enumerate(old):
            first_old.setdefault(o["content_hash"], j)
        for i, r in enumerate(new):
            if r["content_hash"] in first:
                within.append((first[r["content_hash"]], i))
            first.setdefault(r["content_hash"], i)
            if r["content_hash"] in first_old:
                across.append((i, first_old[r["content_hash"]]))
        candidates = verified = len(within) + len(across)
    if threshold is not None:
        stars, shared = set(), set()
        for band in range(BANDS):
            buckets, old_buckets = {}, {}
            for i, r in enumerate(new):
                buckets.setdefault(r["bands"][band], []).append(i)
            for j, o in enumerate(old):
                old_buckets.setdefault(o["bands"][band], []).append(j)
            for h, members in buckets.items():
                stars.update((members[0], i) for i in members[1:])
                shared.update((i, j) for i in members for j in old_buckets.get(h, []))
        candidates += len(stars) + len(shared)
        good = [(a, b) for a, b in sorted(stars) if _similar(new[a], new[b], threshold)]
        good_across = [(i, j) for i, j in sorted(shared) if _similar(new[i], old[j], threshold)]
        verified += len(good) + len(good_across)
        within, across = within + good, across + good_across
    return within, across, candidates, verified


def reference_generation(snapshot: str, rows: list[dict], index: list[dict], threshold: float | None, exact: bool,
                         remove: bool) -> tuple[dict, list[dict], dict]:
    """(fates by (source, id), keepers' index rows, stats) of one generation against `index`."""
    new = sorted(rows, key=lambda r: (RANKS[r["source"]], r["source"], r["id"]))
    old = sorted(index, key=lambda r: (r["snapshot"], RANKS[r["source"]], r["source"], r["id"]))
    within, across, candidates, verified = _pairs(new, old, threshold, exact)
    parent = list(range(len(new)))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in within:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    roots = [find(i) for i in range(len(new))]
    group_old: dict[int, int] = {}
    for i, j in across:
        group_old[roots[i]] = min(group_old.get(roots[i], j), j)
    fates, keepers = {}, []
    for i, r in enumerate(new):
        o = group_old.get(roots[i])
        winner = old[o] if o is not None else new[roots[i]] if roots[i] != i else None
        fates[(r["source"], r["id"])] = {
            "source": r["source"], "snapshot": snapshot, "id": r["id"],
            "fate": "kept" if winner is None or not remove else "duplicate",
            "duplicate_of_source": winner and winner["source"],
            "duplicate_of_snapshot": winner and winner.get("snapshot", snapshot),
            "duplicate_of": winner and winner["id"],
            "match": winner and ("exact" if winner["content_hash"] == r["content_hash"] else "near"),
            "cluster_size": roots.count(roots[i]) + (o is not None),
        }
        if winner is None:
            keepers.append(r | {"snapshot": snapshot})
    matches = [f["match"] for f in fates.values()]
    stats = {"documents": len(new), "duplicates": len(matches) - matches.count(None),
             "exact_duplicates": matches.count("exact"), "near_duplicates": matches.count("near"),
             "candidate_pairs": candidates, "verified_pairs": verified,
             "clusters": len({roots[i] for i in range(len(new)) if roots.count(roots[i]) > 1 or roots[i] in group_old}),
             "max_cluster_size": max((f["cluster_size"] for f in fates.values()), default=0)}
    return fates, keepers, stats


def _run_generations(tmp_path, generations, tasks: int, threshold, exact: bool, remove: bool = True, runner=None):
    """Cluster each generation with `dedup_generation` against the index so far, and with the
    reference against its own index; assert they agree. Returns {path: bytes} of the outputs."""
    out = tmp_path / f"tasks{tasks}"
    index: list[dict] = []
    for snapshot, sources in generations:
        files, rows = [], []
        for source, docs in sources.items():
            files += _write_docs(tmp_path / "sigs" / source / snapshot, source, docs)
            rows += [{"source": source, "id": i, "content_hash": h, "signature": s.tolist(),
                      "bands": band_matrix(s[None, :], BANDS)[0].tolist()} for i, h, s in docs]
        index_files = sorted(str(p) for p in (out / "index").glob("*/*.parquet"))
        stats = dedup_generation(snapshot, files, index_files, RANKS, str(out / "clusters"), str(out / "index"),
                                 threshold=threshold, exact=exact, duckdb_temp_dir=str(tmp_path / "duckdb"),
                                 remove=remove, tasks=tasks, runner=runner)
        fates, keepers, expected = reference_generation(snapshot, rows, index, threshold, exact, remove)
        assert asdict(stats) == expected, snapshot
        for source in sources:
            got = pq.read_table(out / "clusters" / source / f"{snapshot}.parquet").to_pylist()
            assert got == sorted((f for f in fates.values() if f["source"] == source), key=lambda f: f["id"])
            got_index = pq.read_table(out / "index" / source / f"{snapshot}.parquet").to_pylist()
            keys = ("source", "snapshot", "id", "content_hash", "signature", "bands")
            assert got_index == sorted(({k: r[k] for k in keys} for r in keepers if r["source"] == source),
                                       key=lambda r: r["id"])
        index += keepers
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


@pytest.mark.parametrize("threshold,exact,remove", [(0.8, True, True), (None, True, True), (0.8, False, True),
                                                    (0.8, True, False)], ids=["both", "exact-only", "near-only", "keep-all"])
def test_sharded_clustering_matches_the_reference_whatever_the_task_count(tmp_path, threshold, exact, remove):
    generations = _generations(np.random.default_rng(7))
    counts = (1, 2, 3, 7, 40) if exact and threshold else (1, 7)  # 40 ranks > 32 bands: bands cut by hash
    outputs = [_run_generations(tmp_path, generations, tasks, threshold, exact, remove) for tasks in counts]
    assert all(o == outputs[0] for o in outputs)  # the same bytes whatever the task count
    assert len(outputs[0]) == 14


def test_every_bucket_cell_belongs_to_exactly_one_rank():
    for bands in (1, 4, 32):
        for world_size in range(1, 100):
            slices = -(-world_size // bands)
            cells = [(band, s) for rank in range(world_size)
                     for band, cut in owned_cells(rank, world_size, bands).items() for s in cut]
            assert sorted(cells) == [(b, s) for b in range(bands) for s in range(slices)]
            assert all(owned_cells(rank, world_size, bands) for rank in range(world_size))


def test_the_planted_copies_get_the_expected_verdicts(tmp_path):
    """Fixed expectations (not only agreement with the reference) for the planted cases."""
    _run_generations(tmp_path, _generations(np.random.default_rng(7)), 2, 0.8, True)

    def fate(source, snapshot, doc):
        rows = pq.read_table(tmp_path / "tasks2" / "clusters" / source / f"{snapshot}.parquet").to_pylist()
        r = next(r for r in rows if r["id"] == doc)
        return r["fate"], r["duplicate_of_source"], r["duplicate_of_snapshot"], r["duplicate_of"], r["match"], r["cluster_size"]

    assert fate("web", "2024-01", "x-exact") == ("duplicate", "web", "2024-01", "w000", "exact", 2)
    assert fate("web", "2024-01", "x-chain2") == ("duplicate", "web", "2024-01", "w002", "near", 3)
    assert fate("web", "2024-01", "x-oneband")[0] == "kept"  # shares a band, not similar
    assert fate("web", "2024-01", "w003") == ("duplicate", "books", "2024-01", "c-exact-of-web", "exact", 2)
    assert fate("o'reilly", "2024-01", "r-exact-of-book") == ("duplicate", "books", "2024-01", "b000", "exact", 2)
    assert fate("web", "2024-02", "0-exact-of-dropped") == ("duplicate", "web", "2024-01", "w000", "exact", 2)
    assert fate("books", "2024-02", "e-exact-old-web") == ("duplicate", "web", "2024-01", "w007", "exact", 2)
    assert fate("web", "2024-02", "m-bridge") == ("duplicate", "books", "2024-01", "b002", "near", 3)
    assert fate("web", "2024-02", "n-bridge") == ("duplicate", "books", "2024-01", "b002", "exact", 3)
    assert fate("web", "2024-02", "u-twin") == ("duplicate", "web", "2024-02", "t-twin", "near", 2)
    assert fate("web", "2024-03", "0-near-both") == ("duplicate", "web", "2024-02", "t-twin", "near", 2)


def test_a_bucket_pairs_its_first_member_with_each_other_one_only(tmp_path):
    """b and c agree on 97 of 128 positions (3 of 4 in every band but the first), and share only
    band 0's bucket, where a, which sorts first, also is: a is similar to neither, so the star
    (a, b), (a, c) verifies nothing and b, c stay apart, though all pairs of the bucket would join them."""
    rng = np.random.default_rng(5)
    a, b = _random_signature(rng), _random_signature(rng)
    c = b.copy()
    c[4::4] = _random_signature(rng)[:31]
    b[:4] = c[:4] = a[:4]
    docs = [("a", 1, a), ("b", 2, b), ("c", 3, c)] + [(f"r{i}", 10 + i, _random_signature(rng)) for i in range(5)]
    assert _similar({"signature": b}, {"signature": c}, 0.75)
    generations = [("default", {"web": docs})]
    for tasks in (1, 3):
        _run_generations(tmp_path, generations, tasks, 0.75, True)
        rows = pq.read_table(tmp_path / f"tasks{tasks}" / "clusters" / "web" / "default.parquet").to_pylist()
        assert {r["fate"] for r in rows} == {"kept"} and all(r["duplicate_of"] is None for r in rows)


def test_a_generation_without_duplicates_keeps_everything(tmp_path):
    rng = np.random.default_rng(11)
    docs = [(f"d{i}", i, _random_signature(rng)) for i in range(33)]
    _run_generations(tmp_path, [("default", {"web": docs[:30], "o'reilly": docs[30:]})], 3, 0.8, False)
    rows = pq.read_table(tmp_path / "tasks3" / "clusters" / "web" / "default.parquet").to_pylist()
    assert {r["fate"] for r in rows} == {"kept"} and {r["cluster_size"] for r in rows} == {1}
    assert pq.read_metadata(tmp_path / "tasks3" / "index" / "web" / "default.parquet").num_rows == 30


def test_the_phases_run_as_worker_processes(tmp_path):
    """The steps pickle to datatrove's worker pool and write what the in-process run writes."""
    generations = _generations(np.random.default_rng(3))[:1]
    here = _run_generations(tmp_path / "here", generations, 3, 0.8, True)
    pool = _run_generations(tmp_path / "pool", generations, 3, 0.8, True, runner=local_runner(2))
    assert pool == here
