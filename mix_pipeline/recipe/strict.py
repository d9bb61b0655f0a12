"""The base of every recipe section: a frozen pydantic model that refuses unknown keys and
non-finite numbers, so a typo or a NaN fails loudly instead of meaning something else."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # NaN and infinity are refused everywhere: `weights: {web: .nan}` would otherwise pass `≥ 0`.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
