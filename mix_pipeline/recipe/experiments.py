"""The recipe's `experiments:` section: mixture-lab experiments (core/lab/search.py), the proxy
model each candidate mixture is trained with (core/lab/neural.py) and the transfer checks
(core/lab/transfer.py). Cross-references to the recipe's mixtures and sources are checked by
`Recipe` (schema.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mix_pipeline.recipe.strict import Strict


class ProxySpec(Strict):
    """The lab's proxy language model: `bigram`, an interpolated absolute-discounting word bigram
    model over a hashed (capped) vocabulary, or `neural`, a small byte-level decoder-only
    transformer trained from scratch per candidate (core/lab/neural.py; needs the `lab` extra)."""

    kind: Literal["bigram", "neural"] = "bigram"
    # Words are hashed into this many ids; collisions merge rare words (a capped vocabulary).
    vocab_buckets: int = Field(65_536, ge=256, le=2**20)
    # Absolute discount subtracted from every seen bigram count (Kneser–Ney's usual 0.75).
    discount: float = Field(0.75, gt=0.0, lt=1.0)
    # Add-k smoothing of the unigram distribution the bigrams back off to.
    unigram_k: float = Field(0.1, gt=0.0)
    # neural: width, depth and heads of the transformer (defaults: ~0.8M parameters; d_model 384,
    # layers 8 gives ~14M), the training window in bytes, windows per step, optimizer steps at the
    # lab's `total` (scaled with the data in the transfer check), peak learning rate.
    d_model: int = Field(128, ge=8, le=4096)
    layers: int = Field(4, ge=1, le=64)
    heads: int = Field(4, ge=1, le=64)
    seq_len: int = Field(128, ge=8, le=4096)
    batch: int = Field(16, ge=1, le=4096)
    steps: int = Field(200, ge=1, le=1_000_000)
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    # auto = CUDA when torch sees a GPU, else the CPU; threads: fixed CPU threads (determinism).
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(2, ge=1, le=256)
    # Held-out windows scored per domain (evenly spaced over the held-out text).
    eval_windows: int = Field(64, ge=1, le=100_000)

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.heads:
            raise ValueError(f"heads: {self.heads} does not divide d_model {self.d_model}")
        return self


class TransferSpec(Strict):
    """Does the ranking of candidates hold at larger scale? Re-run some candidates bigger and
    compare rank correlations (core/lab/transfer.py)."""

    # How many candidates are re-run (the prior, uniform, then the draws in order).
    candidates: int = Field(6, ge=3, le=256)
    # A larger neural proxy for the same candidates (small vs larger); none = skip that check.
    larger: ProxySpec | None = None
    # The same candidates at scale x total (neural steps scale with it); 1 = skip that check.
    scale: int = Field(4, ge=1, le=64)


class ExperimentSpec(Strict):
    """One mixture-lab experiment: proxy-train candidate mixtures, fit weights → loss, recommend."""

    # The named mixture whose weights (and unit, max_epochs) the candidates are drawn around.
    prior: str
    # Dirichlet draws around the prior (the recipe's own mixtures and uniform are added to them).
    candidates: int = Field(12, ge=1, le=256)
    # Dirichlet concentration: α = concentration × n_sources × prior weights (higher = closer).
    concentration: float = Field(4.0, gt=0.0)
    # Share of the draws (candidates and search samples) taken uniformly over the whole simplex
    # instead of around the prior, so the regressor interpolates rather than extrapolates.
    explore: float = Field(0.5, ge=0.0, le=1.0)
    # Units (in the prior's unit) of each small candidate mixture.
    total: int = Field(gt=0)
    # Deterministic hash slice of each source's deduplicated documents held out for scoring.
    holdout: float = Field(0.1, gt=0.0, lt=1.0)
    # At most this many held-out documents per source are scored (the first in hash order).
    holdout_max_documents: int = Field(500, ge=1)
    # Extra held-out sets: name → JSON-lines file with a `text` field (scored like a source's).
    eval_sets: dict[str, str] = Field(default_factory=dict)
    # Per-domain weights of the objective (domains: source names and eval-set names);
    # omitted domains weigh 0; empty = every domain weighs 1.
    objective: dict[str, float] = Field(default_factory=dict)
    # Weight vectors the regressor scores when searching for the recommendation.
    search_samples: int = Field(20_000, ge=100, le=1_000_000)
    # The recommendation is the mean of this many best-predicted feasible samples.
    recommend_top: int = Field(100, ge=1)
    # Floor inside the regressor's log(weight + floor) features: keeps predictions finite at 0.
    log_floor: float = Field(0.02, gt=0.0)
    proxy: ProxySpec = Field(default_factory=ProxySpec)
    # Rank-correlation checks across proxy kinds, sizes and data quantities (none = skip).
    transfer: TransferSpec | None = None
    # Regularisation of the search: predicted objective + natural_pull x KL(w || natural mix),
    # the natural mix being each source's share of the available data (0 = off).
    natural_pull: float = Field(0.0, ge=0.0)
    # Repetition cap: no source may repeat more than this many times in the full-size
    # recommended mixture (tighter than the prior's max_epochs; none = the prior's).
    max_repetition: float | None = Field(None, gt=0.0)
    # Reuse the previous run's candidates: sources whose documents are unchanged keep their
    # relative proportions, and only candidates over the changed sources are trained.
    reuse: bool = False
    seed: int = 0

    @field_validator("objective")
    @classmethod
    def _objective_sane(cls, objective: dict[str, float]) -> dict[str, float]:
        for domain, w in objective.items():
            if w < 0:
                raise ValueError(f"{domain}: objective weight must be ≥ 0 (got {w})")
        if objective and sum(objective.values()) <= 0:
            raise ValueError("all objective weights are zero")
        return objective
