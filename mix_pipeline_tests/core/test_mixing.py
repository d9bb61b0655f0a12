import numpy as np
import pytest

from mix_pipeline.core.mixing.pools import Pool
from mix_pipeline.core.mixing.sampling import fill_remainder
from mix_pipeline.core.mixing.selection import plan_mixture
from mix_pipeline.core.mixing.splits import SPLITS, split_codes, stratified_split_codes
from mix_pipeline.core.mixing.weights import InfeasibleMixture, water_fill
from mix_pipeline.recipe import MixtureSpec


def _pools(sizes: dict[str, int], seed=0):
    rng = np.random.default_rng(seed)
    return {s: Pool.from_ids(s, [f"{s}-{i}" for i in range(n)], rng.integers(50, 5000, n)) for s, n in sizes.items()}


def _ids(plan, source=None):
    """(source, row) pairs of the selection; in-memory pools are one 'file', so row is the doc index."""
    rows = plan.selection.to_pylist()
    return [(r["source"], r["row"]) for r in rows if source is None or r["source"] == source]


def test_weights_hit_within_tolerance_with_repeats_capped():
    spec = MixtureSpec(total=2_000_000, weights={"web": 0.5, "books": 0.3, "code": 0.2}, max_epochs=4, seed=7)
    pools = _pools({"web": 2000, "books": 150, "code": 300})
    plan = plan_mixture("m", spec, pools)
    by = {row.source: row for row in plan.ledger}
    for source, weight in spec.weights.items():
        assert abs(by[source].achieved_weight - weight) / weight < 0.005
        assert by[source].epochs <= spec.max_epochs
    assert by["books"].epochs > 1  # books is upsampled: 150 docs × ~2.5k tokens < 600k
    assert plan.selection.num_rows == sum(r.rows for r in plan.ledger)
    # Repeats of one document all go to the same split.
    split_by_doc = {}
    for r in plan.selection.to_pylist():
        assert split_by_doc.setdefault((r["source"], r["row"]), r["split"]) == r["split"]


def test_same_seed_same_selection_other_seed_differs():
    spec = MixtureSpec(total=300_000, weights={"web": 1.0}, seed=1)
    pools = _pools({"web": 500})
    a = plan_mixture("m", spec, pools)
    b = plan_mixture("m", spec, pools)
    c = plan_mixture("m", spec.model_copy(update={"seed": 2}), pools)
    assert a.selection.equals(b.selection)
    assert set(_ids(a)) != set(_ids(c))


def test_infeasible_request_names_source_and_shortfall():
    spec = MixtureSpec(total=10_000, weights={"web": 0.5, "books": 0.5}, max_epochs=2)
    pools = {"web": Pool.from_ids("web", ["w"], [10_000]), "books": Pool.from_ids("books", ["b1", "b2"], [1000, 1000])}
    with pytest.raises(InfeasibleMixture, match=r"mixture 'm': source 'books' is short: the target needs 5,000 units but 2,000 are available and max_epochs=2 allows 4,000 \(short by 1,000\)"):
        plan_mixture("m", spec, pools)


def test_per_source_max_epochs_overrides_the_mixture_default():
    pools = _pools({"web": 2000, "books": 100})
    spec = MixtureSpec(total=1_000_000, weights={"web": 0.7, "books": 0.3}, max_epochs=1)
    with pytest.raises(InfeasibleMixture, match="source 'books' is short"):
        plan_mixture("m", spec, pools)
    spec = MixtureSpec(total=1_000_000, weights={"web": 0.7, "books": 0.3}, max_epochs=1,
                       sources={"books": {"max_epochs": 3}})
    by = {r.source: r for r in plan_mixture("m", spec, pools).ledger}
    assert 1 < by["books"].epochs <= 3 and by["web"].epochs <= 1
    assert by["books"].max_epochs == 3 and by["web"].max_epochs == 1


def test_rebalance_moves_the_shortfall_to_the_others_by_weight():
    pools = _pools({"web": 3000, "code": 3000, "books": 100})
    spec = MixtureSpec(total=1_000_000, weights={"web": 0.5, "code": 0.25, "books": 0.25}, on_infeasible="rebalance")
    plan = plan_mixture("m", spec, pools)
    by = {r.source: r for r in plan.ledger}
    books_available = pools["books"].available
    assert by["books"].units <= books_available and by["books"].units >= 0.99 * books_available
    assert plan.rebalanced == {"books": 250_000 - by["books"].target_units}
    assert by["books"].shortfall_units == plan.rebalanced["books"] and by["web"].shortfall_units == 0
    # web and code keep their 2:1 ratio and absorb the rest.
    assert abs(by["web"].units / by["code"].units - 2) < 0.01
    assert abs(sum(r.units for r in plan.ledger) - 1_000_000) / 1_000_000 < 0.005


def test_max_fraction_caps_a_share_and_temperature_flattens():
    pools = _pools({"web": 4000, "books": 400})
    spec = MixtureSpec(total=500_000, temperature=2.0, sources={"web": {"max_fraction": 0.7}})
    plan = plan_mixture("m", spec, pools)
    by = {r.source: r for r in plan.ledger}
    size = {s: p.available for s, p in pools.items()}
    flat = {s: n ** 0.5 for s, n in size.items()}
    assert by["web"].requested_weight == pytest.approx(flat["web"] / sum(flat.values()), abs=1e-6)
    # T=2 would give web ~76%; the cap holds it at 70% and books gets the rest.
    assert by["web"].requested_weight > 0.7 and by["web"].target_weight == pytest.approx(0.7)
    assert abs(by["web"].achieved_weight - 0.7) / 0.7 < 0.005
    assert plan.weighting == {"kind": "temperature", "temperature": 2.0}


def test_water_fill():
    assert water_fill({"a": 1, "b": 1, "c": 2}, {"a": 0.1, "b": 1, "c": 1}, 1.0) == pytest.approx({"a": 0.1, "b": 0.3, "c": 0.6})
    assert sum(water_fill({"a": 1, "b": 1}, {"a": 0.2, "b": 0.3}, 1.0).values()) == pytest.approx(0.5)


def test_fill_remainder_gets_close_from_below():
    units = np.array([900, 50, 700, 30, 20, 5])
    take = fill_remainder(units, 1000)
    assert 995 <= units[take].sum() <= 1000


def test_split_fractions_are_roughly_honoured():
    pool = Pool.from_ids("web", [str(i) for i in range(20_000)], np.ones(20_000))
    split = split_codes(pool.survivors(np.arange(len(pool)))[0], 0.1, 0.05)
    assert abs((split == 1).mean() - 0.1) < 0.01
    assert abs((split == 2).mean() - 0.05) < 0.01


def test_copies_take_their_survivors_split():
    ids = [f"d{i}" for i in range(400)]
    survivors = {f"d{i}": ("web", f"d{i - 200}") for i in range(200, 400)}
    pool = Pool.from_ids("web", ids, np.ones(400), survivors=survivors)
    split = split_codes(pool.survivors(np.arange(len(pool)))[0], 0.3, 0.3)
    assert (split[200:] == split[:200]).all()
    assert len(set(split.tolist())) == 3


def test_sources_of_few_large_documents_still_hit_their_weights():
    rng = np.random.default_rng(3)
    pools = {
        "web": Pool.from_ids("web", [f"w{i}" for i in range(50)], rng.integers(600, 2000, 50)),
        "books": Pool.from_ids("books", [f"b{i}" for i in range(5)], [5366, 7956, 9027, 11972, 13215]),
        "code": Pool.from_ids("code", [f"c{i}" for i in range(16)], rng.integers(500, 11_000, 16)),
        "papers": Pool.from_ids("papers", [f"p{i}" for i in range(11)], rng.integers(2000, 3700, 11)),
    }
    spec = MixtureSpec(total=120_000, weights={"web": 0.5, "books": 0.2, "code": 0.2, "papers": 0.1}, max_epochs=4)
    for seed in range(5):
        plan = plan_mixture("m", spec.model_copy(update={"seed": seed}), pools)
        for row in plan.ledger:
            assert abs(row.achieved_weight - row.target_weight) / row.target_weight <= 0.005, (seed, row)
        assert 120_000 / 1.25 <= sum(r.units for r in plan.ledger) <= 120_000 * 1.25


def test_a_copy_follows_its_survivors_source_fractions():
    books = Pool.from_ids("books", [f"b{i}" for i in range(100)], np.ones(100))
    survivors = {f"w{i}": ("books", f"b{i}") for i in range(100)}
    web = Pool.from_ids("web", [f"w{i}" for i in range(200)], np.ones(200), survivors=survivors)
    spec = MixtureSpec(total=300, unit="documents", weights={"web": 2, "books": 1}, seed=3,
                       splits={"validation": 0.5}, sources={"books": {"splits": {"validation": 0.0, "test": 0.0}}})
    rows = plan_mixture("m", spec, {"web": web, "books": books}).selection.to_pylist()
    split = {(r["source"], r["row"]): r["split"] for r in rows}
    assert {split[("books", i)] for i in range(100)} == {"train"}
    assert {split[("web", i)] for i in range(100)} == {"train"}  # copies of books
    # web's validation is half of web's 200 units: the copies are pinned to train, so stratification
    # takes all 100 others.
    assert sum(split[("web", i)] == "validation" for i in range(100, 200)) == 100


def test_splits_are_stratified_by_source():
    """Each split keeps the mixture's proportions: a 10% source is 10% of train (not 8.4%), and
    validation/test take each source's fraction of its units, within one document."""
    rng = np.random.default_rng(11)
    # The demo's granularity (20 MB sample, tokens ≈ bytes / 4): web pages of 250-2,000 tokens,
    # book chapters of 2,500-14,500, stdlib files of 100-12,000, papers of 1,500-4,000.
    pools = {
        "web": Pool.from_ids("web", [f"w{i}" for i in range(2000)], rng.integers(250, 2000, 2000)),
        "books": Pool.from_ids("books", [f"b{i}" for i in range(120)], rng.integers(2500, 14_500, 120)),
        "code": Pool.from_ids("code", [f"c{i}" for i in range(300)], rng.integers(100, 12_000, 300)),
        "papers": Pool.from_ids("papers", [f"p{i}" for i in range(230)], rng.integers(1500, 4000, 230)),
    }
    weights = {"web": 0.5, "books": 0.2, "code": 0.2, "papers": 0.1}
    spec = MixtureSpec(total=2_000_000, weights=weights, max_epochs=4, splits={"validation": 0.01, "test": 0.01})
    for seed in range(3):
        sel = plan_mixture("m", spec.model_copy(update={"seed": seed}), pools).selection
        units = {(s, sp): 0 for s in weights for sp in SPLITS}
        for r in sel.group_by(["source", "split"]).aggregate([("units", "sum")]).to_pylist():
            units[(r["source"], r["split"])] = r["units_sum"]
        train = sum(units[(s, "train")] for s in weights)
        for s, w in weights.items():
            assert abs(units[(s, "train")] / train - w) / w <= 0.01, (seed, s, units[(s, "train")] / train)
            total = sum(units[(s, sp)] for sp in SPLITS)
            biggest = int(pools[s].units.max())
            held = units[(s, "validation")] + units[(s, "test")]
            assert abs(units[(s, "validation")] - 0.01 * total) < biggest and abs(held - 0.02 * total) < biggest, (seed, s)
            assert units[(s, "validation")] and units[(s, "test")]


def test_stratified_split_codes_keep_pinned_rows_and_whole_keys():
    units = np.array([5, 5, 5, 5, 10, 10, 1, 1], np.int64)
    keys = np.array([1, 1, 2, 3, 4, 5, 6, 7], np.uint64) << np.uint64(60)  # rows 0 and 1 share a key
    pinned = np.array([False] * 7 + [True])
    codes = stratified_split_codes(units, keys, pinned, np.array([0] * 7 + [2], np.int8), 0.25, 0.25)
    assert codes[7] == 2  # pinned to test by its hash threshold
    assert codes[0] == codes[1]
    # 25% of 42 units each, in whole keys; test counts its pinned row, and both together hold half.
    assert units[codes == 1].sum() == 10 and units[codes == 2].sum() == 11 and codes[4:6].tolist() == [0, 0]


def test_a_source_too_coarse_for_its_share_does_not_empty_the_plan():
    # books' smallest document (10k units) is larger than its target (2% of 50k): re-anchoring
    # on books (which gives 0) once asked every source for 0 units and scored that as perfect.
    pools = {"books": Pool.from_ids("books", [f"b{i}" for i in range(20)], np.full(20, 10_000)),
             "code": Pool.from_ids("code", [f"c{i}" for i in range(200)], np.full(200, 1_000)),
             "web": Pool.from_ids("web", [f"w{i}" for i in range(500)], np.full(500, 500))}
    spec = MixtureSpec(total=50_000, weights={"books": 0.02, "code": 0.5, "web": 0.48}, max_epochs=4, seed=1,
                       on_infeasible="rebalance")
    plan = plan_mixture("m", spec, pools)
    by = {row.source: row for row in plan.ledger}
    assert by["code"].units > 20_000 and by["web"].units > 20_000
    assert plan.selection.num_rows > 0
