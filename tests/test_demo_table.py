"""The demo's printed results table: means, spreads and paired differences over seeds, hand-computed."""
from pipeline.demo import print_table

SUMMARY = {
    "ego_task": "test task", "baseline_row": "baseline", "chance_mAP": 0.25, "seeds": [0, 1, 2],
    "rows": {"scratch": {"0": 0.50, "1": 0.52, "2": 0.48}, "baseline": {"0": 0.40, "1": 0.44, "2": 0.42},
             "egoexo": {"0": 0.46, "1": 0.45, "2": 0.50}},
    "pretrain_val_top1": {"baseline": {"0": 0.25, "1": 0.5, "2": 0.375}, "egoexo": {"0": 0.5, "1": 0.5, "2": 0.5}},
    "pretrain_chance_top1": 0.125, "teachers": {}, "signals_store": "signals/kinetics.zarr",
    "seconds": {"make_world": 1.0, "total": 2.0},
}


def test_table_rows_give_mean_std_and_paired_interval(capsys):
    print_table(SUMMARY)
    lines = {line.split("  ")[0].strip(): line for line in capsys.readouterr().out.splitlines()}
    # scratch: mean 0.50, std 0.02; vs baseline: differences 0.10, 0.08, 0.06 -> mean 0.08, std 0.02,
    # half-width t(0.975, 2) 4.303 * 0.02 / sqrt(3) = 0.0497 -> [+3.03, +12.97] percentage points.
    assert "50.00" in lines["scratch (no pre-training)"] and "2.00" in lines["scratch (no pre-training)"]
    assert "+8.00 [+3.03, +12.97] exceeds seed noise" in lines["scratch (no pre-training)"]
    # egoexo: differences 0.06, 0.01, 0.08 -> mean 0.05, std 0.0361, half-width 0.0896 -> [-3.96, +13.96].
    assert "+5.00 [-3.96, +13.96] within seed noise" in lines["Ego-Exo"]
    assert "42.00" in lines["exo-pretrained baseline"] and "[" not in lines["exo-pretrained baseline"]
    out = "\n".join(lines.values())
    assert "baseline 37.5, egoexo 50.0" in out and "chance 12.5" in out
