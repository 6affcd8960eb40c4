"""Seed statistics on hand-made numbers, checked against values computed by hand."""
import math

import pytest

from pipeline.stats import EXCEEDS, TOO_FEW, WITHIN, compare_rows, mean_std, paired_difference, t_975

TABLE = {
    "scratch": {"0": 0.50, "1": 0.52, "2": 0.51},
    "baseline": {"0": 0.40, "1": 0.44, "2": 0.42},
    "egoexo": {"0": 0.46, "1": 0.47, "2": 0.51},
    "ego_only": {"0": 0.41, "1": 0.47, "3": 0.90},  # seed 3 has no baseline to pair with
}


def test_mean_and_sample_std():
    # baseline: mean 0.42, deviations -0.02, 0.02, 0 -> sum of squares 0.0008 / (3 - 1) -> std 0.02
    assert mean_std([0.40, 0.44, 0.42]) == pytest.approx((0.42, 0.02))
    # egoexo: mean 0.48, deviations -0.02, -0.01, 0.03 -> 0.0014 / 2 = 0.0007 -> std 0.026458
    assert mean_std([0.46, 0.47, 0.51]) == pytest.approx((0.48, math.sqrt(0.0007)))
    mean, std = mean_std([0.3])
    assert mean == 0.3 and math.isnan(std)


def test_paired_difference_within_noise():
    # egoexo - baseline per seed: 0.06, 0.03, 0.09 -> mean 0.06, sd 0.03 (squares 0, 0.0009, 0.0009 over 2);
    # half-width t(0.975, 2) * 0.03 / sqrt(3) = 4.303 * 0.017321 = 0.074530: the interval holds 0.
    d = paired_difference(TABLE["egoexo"], TABLE["baseline"])
    assert d.seeds == ["0", "1", "2"]
    assert (d.mean, d.std) == pytest.approx((0.06, 0.03))
    assert (d.low, d.high) == pytest.approx((0.06 - 0.074530, 0.06 + 0.074530), abs=1e-6)
    assert d.verdict == WITHIN


def test_paired_difference_exceeds_noise_though_the_rows_overlap():
    # scratch - baseline: 0.10, 0.08, 0.09 -> mean 0.09, sd 0.01, half-width 4.303 * 0.01 / sqrt(3) = 0.024843.
    # Unpaired, the baseline's own spread (std 0.02) would hide it; paired, it cancels.
    d = paired_difference(TABLE["scratch"], TABLE["baseline"])
    assert (d.mean, d.std) == pytest.approx((0.09, 0.01))
    assert (d.low, d.high) == pytest.approx((0.065157, 0.114843), abs=1e-6)
    assert d.verdict == EXCEEDS
    below = paired_difference({"0": 0.30, "1": 0.32, "2": 0.31}, TABLE["baseline"])
    assert below.high < 0 and below.verdict == EXCEEDS  # a loss beyond noise is outside noise too


def test_only_shared_seeds_are_paired():
    # ego_only shares seeds 0 and 1 with the baseline: differences 0.01, 0.03 -> mean 0.02, sd 0.014142,
    # df 1: half-width 12.706 * 0.014142 / sqrt(2) = 0.12706.
    rows = {r.name: r for r in compare_rows(TABLE, "baseline")}
    r = rows["ego_only"]
    assert r.n == 3 and r.mean == pytest.approx((0.41 + 0.47 + 0.90) / 3)  # its own seeds, all three
    assert r.difference.seeds == ["0", "1"]
    assert (r.difference.low, r.difference.high) == pytest.approx((0.02 - 0.12706, 0.02 + 0.12706), abs=1e-6)
    assert rows["baseline"].difference is None
    assert list(rows) == list(TABLE)  # the table's order
    one = paired_difference({"0": 0.5, "7": 0.1}, {"0": 0.4})
    assert one.mean == pytest.approx(0.1) and one.verdict == TOO_FEW and math.isnan(one.low)
    assert paired_difference({"5": 0.5}, {"0": 0.4}) is None


def test_integer_seeds_sort_numerically_and_the_baseline_must_exist():
    rows = compare_rows({"baseline": {10: 1.0, 2: 2.0, 1: 3.0}}, "baseline")
    assert list(rows[0].values) == ["1", "2", "10"]
    with pytest.raises(ValueError, match="baseline row 'base'"):
        compare_rows(TABLE, "base")


def test_t_quantiles():
    assert t_975(2) == 4.303 and t_975(1) == 12.706 and t_975(30) == 2.042
    assert t_975(31) == pytest.approx(2.0395, abs=1e-4)  # the expansion past the table
    assert t_975(10_000) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError):
        t_975(0)
    scipy_t = pytest.importorskip("scipy.stats").t  # present through scikit-learn; not our dependency
    for df in range(1, 80):
        assert t_975(df) == pytest.approx(scipy_t.ppf(0.975, df), abs=5e-4)
