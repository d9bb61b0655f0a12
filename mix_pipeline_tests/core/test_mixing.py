import numpy as np
import pytest

from mix_pipeline.core.mixing import (
    InfeasibleMixture,
    fill_remainder,
    plan_mixture,
    split_of,
)
from mix_pipeline.recipe import MixtureSpec


def _pools(sizes: dict[str, int], seed=0):
    rng = np.random.default_rng(seed)
    return {s: ([f"{s}-{i}" for i in range(n)], rng.integers(50, 5000, n).astype(np.int64)) for s, n in sizes.items()}


def test_weights_hit_within_tolerance_with_repeats_capped():
    spec = MixtureSpec(total=2_000_000, weights={"web": 0.5, "books": 0.3, "code": 0.2}, max_epochs=4, seed=7)
    pools = _pools({"web": 2000, "books": 150, "code": 300})
    selection, ledger = plan_mixture("m", spec, pools)
    by = {row.source: row for row in ledger}
    for source, weight in spec.weights.items():
        assert abs(by[source].achieved_weight - weight) / weight < 0.005
        assert by[source].epochs <= spec.max_epochs
    assert by["books"].epochs > 1  # books is upsampled: 150 docs × ~2.5k tokens < 600k
    assert selection.num_rows == sum(r.rows for r in ledger)
    # Repeats of one document all go to the same split.
    rows = selection.to_pylist()
    split_by_doc = {}
    for r in rows:
        assert split_by_doc.setdefault((r["source"], r["id"]), r["split"]) == r["split"]


def test_same_seed_same_selection_other_seed_differs():
    spec = MixtureSpec(total=300_000, weights={"web": 1.0}, seed=1)
    pools = _pools({"web": 500})
    a, _ = plan_mixture("m", spec, pools)
    b, _ = plan_mixture("m", spec, pools)
    c, _ = plan_mixture("m", spec.model_copy(update={"seed": 2}), pools)
    assert a.equals(b)
    assert set(a.column("id").to_pylist()) != set(c.column("id").to_pylist())


def test_infeasible_request_names_source_and_shortfall():
    spec = MixtureSpec(total=10_000, weights={"web": 0.5, "books": 0.5}, max_epochs=2)
    pools = {"web": (["w"], np.array([10_000])), "books": (["b1", "b2"], np.array([1000, 1000]))}
    with pytest.raises(InfeasibleMixture, match=r"mixture 'm': source 'books' is short: the target needs 5,000 units but 2,000 are available and max_epochs=2 allows 4,000 \(short by 1,000\)"):
        plan_mixture("m", spec, pools)


def test_fill_remainder_gets_close_from_below():
    units = np.array([900, 50, 700, 30, 20, 5])
    take = fill_remainder(units, 1000)
    assert 995 <= units[take].sum() <= 1000


def test_split_fractions_are_roughly_honoured():
    ids = [str(i) for i in range(20_000)]
    split = split_of("web", ids, 0.1, 0.05)
    assert abs((split == 1).mean() - 0.1) < 0.01
    assert abs((split == 2).mean() - 0.05) < 0.01
