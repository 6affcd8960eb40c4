"""Seed statistics for a results table: mean +- std per row and paired differences against a baseline.

A table is ``{row_name: {seed: value}}``. Rows are compared with the baseline *paired*
over the seeds both have (seed ``s`` of a row against seed ``s`` of the baseline: the same
world, split and initial draw), so noise the two share cancels. The 95 % interval of the
mean difference is Student's t with ``n - 1`` degrees of freedom.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Two-sided 95 % quantiles t(0.975, df) for df = 1..30. scipy.stats would give them, but scipy
# is not a dependency of ours (it only arrives through scikit-learn), and a few seeds never
# need more than these 30 published values.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z_975 = 1.959964

EXCEEDS, WITHIN, TOO_FEW = "exceeds seed noise", "within seed noise", "one shared seed: no interval"


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    # Past the table, the Cornish-Fisher expansion of t around the normal quantile (Abramowitz &
    # Stegun 26.7.5), within 1e-4 of the exact value from df = 30 on.
    z = Z_975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


@dataclass
class Difference:
    """A row minus the baseline, paired over ``seeds``; ``low``/``high`` bound the 95 % interval."""

    seeds: list[str]
    mean: float
    std: float  # of the per-seed differences (ddof=1)
    low: float
    high: float
    verdict: str

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass
class RowStats:
    """One row over its seeds; ``difference`` is None for the baseline itself or without shared seeds."""

    name: str
    values: dict[str, float]
    mean: float
    std: float  # sample std (ddof=1); NaN with one seed
    difference: Difference | None

    @property
    def n(self) -> int:
        return len(self.values)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for fewer than two values)."""
    x = np.asarray(list(values), dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan


def paired_difference(row: dict[str, float], baseline: dict[str, float]) -> Difference | None:
    """Mean of ``row[s] - baseline[s]`` over the seeds both have, with its 95 % t-interval."""
    seeds = sorted(set(row) & set(baseline), key=seed_order)
    if not seeds:
        return None
    d = [row[s] - baseline[s] for s in seeds]
    mean, std = mean_std(d)
    if len(d) < 2:
        return Difference(seeds, mean, std, math.nan, math.nan, TOO_FEW)
    half = t_975(len(d) - 1) * std / math.sqrt(len(d))
    low, high = mean - half, mean + half
    verdict = EXCEEDS if low > 0 or high < 0 else WITHIN
    return Difference(seeds, mean, std, low, high, verdict)


def compare_rows(table: dict[str, dict], baseline: str) -> list[RowStats]:
    """Mean +- std of every row and its paired difference against ``baseline``, in the table's row order."""
    if baseline not in table:
        raise ValueError(f"baseline row '{baseline}' is not in the table (rows: {', '.join(table)})")
    rows = []
    for name, values in table.items():
        values = {str(s): float(v) for s, v in sorted(values.items(), key=lambda kv: seed_order(kv[0]))}
        if not values:
            continue
        mean, std = mean_std(values.values())
        base = {str(s): float(v) for s, v in table[baseline].items()}
        diff = None if name == baseline else paired_difference(values, base)
        rows.append(RowStats(name, values, mean, std, diff))
    return rows


def seed_order(seed) -> tuple:
    """Sort key: integer seeds numerically ("2" before "10"), then any others by name."""
    s = str(seed)
    return (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s)
