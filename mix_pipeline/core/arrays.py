"""Array idioms the core modules share (numpy only)."""

from __future__ import annotations

import numpy as np


def runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start of each run of equal values, run lengths) of a sorted, non-empty array."""
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    return starts, np.diff(np.append(starts, len(sorted_values)))
