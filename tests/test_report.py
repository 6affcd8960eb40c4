"""``pipeline report`` from two fabricated run directories over a hand-written signals store."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.report import images_in, load_runs, per_class_ap, write_report

EGO_CLASSES = ["take cup", "open door", "sit"]  # "sit" has no positive in the test clips
LABELS = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
RANKED = np.array([[0.9, 0.9, 0.5], [0.1, 0.2, 0.5], [0.8, 0.8, 0.5], [0.2, 0.1, 0.5]])  # AP 1, 7/12
PERFECT = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5], [0.8, 0.8, 0.5], [0.2, 0.1, 0.5]])  # AP 1, 1
SEED_VALUES = {  # ego mAP per row and seed: the hand-computed table of test_stats
    "scratch": {"0": 0.50, "1": 0.52, "2": 0.51},
    "baseline": {"0": 0.40, "1": 0.44, "2": 0.42},
    "egoexo": {"0": 0.46, "1": 0.47, "2": 0.51},
}


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def make_run(run, seeds, with_outputs=True):
    """A run directory as the demo leaves it, for ``seeds``; the store and videos are one level up."""
    runs = {}
    for row in SEED_VALUES:
        for seed in seeds:
            key, tag = f"{row}/seed{seed}", f"{row}-s{seed}"
            runs[key] = {"pretrain": None if row == "scratch" else f"students/{tag}",
                         "finetune": f"finetuned/{tag}", "metrics": f"metrics/{tag}.json"}
            if not with_outputs:
                continue
            if row != "scratch":
                distil = ["loss_ego", "loss_hand_map"] if row == "egoexo" else []
                write_json(run / f"students/{tag}/history.json", [
                    {"epoch": e + 1, "seconds": 1.0, "loss": 2.0 / (e + 1), "loss_action": 1.5 / (e + 1),
                     **{k: 0.6 / (e + 1) for k in distil}} for e in range(3)])
            write_json(run / f"finetuned/{tag}/history.json",
                       [{"epoch": e + 1, "seconds": 1.0, "loss": 1.0 / (e + 1), "loss_action": 1.0 / (e + 1)} for e in range(2)])
            (run / "metrics").mkdir(parents=True, exist_ok=True)
            scores = PERFECT if (row, seed) in (("baseline", 0), ("baseline", 1), ("egoexo", 1)) else RANKED
            np.savez(run / f"metrics/{tag}.predictions.npz", clip_id=np.array(["a", "b", "c", "d"]), labels=LABELS,
                     scores_action=scores, classes=np.array(EGO_CLASSES))
            write_json(run / f"metrics/{tag}.json", {"mAP": 0.5, "chance_mAP": 0.25,
                                                     "predictions": f"metrics/{tag}.predictions.npz"})
    write_json(run / "demo-summary.json", {
        "ego_task": "Charades-Ego-like, multi-label mAP", "baseline_row": "baseline", "chance_mAP": 0.25,
        "rows": {row: {str(s): v[str(s)] for s in seeds} for row, v in SEED_VALUES.items()},
        "pretrain_val_top1": {"baseline": {str(s): 0.30 + 0.01 * s for s in seeds},
                              "egoexo": {str(s): 0.35 + 0.01 * s for s in seeds}},
        "runs": runs,
        "teachers": {"ego": {"accuracy": 0.95, "chance": 0.5}, "handobj": {"hand_ap50": 0.81}},
        "signals_store": "../signals.zarr", "video_root": "../videos",
        "seconds": {"make_world": 11.2, "train_teachers": 119.0, "total": 130.2},
        "jobs": 2, "step_seconds": {"train-teachers.ego": 41.6, "finetune.scratch-s0": 3.4},
        "reused": ["finetune.scratch-s0"] if with_outputs else [],
    })
    return run


@pytest.fixture
def runs(fabricated_store, tmp_path):
    # Seeds 0 and 1 in one directory, seed 2 in another whose training outputs are gone.
    return make_run(tmp_path / "run-a", [0, 1]), make_run(tmp_path / "run-b", [2], with_outputs=False)


def test_report_pools_seeds_and_says_how_each_row_compares(runs, tmp_path):
    done = write_report(list(runs), tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    rows = {r["name"]: r for r in done["results"]}
    assert rows["egoexo"]["values"] == {"0": 0.46, "1": 0.47, "2": 0.51}  # seeds of both directories
    # the numbers test_stats computes by hand: egoexo - baseline +0.06 +- 0.074530, scratch +0.09 +- 0.024843
    assert "| egoexo | 3 | 48.00 ± 2.65 | +6.00 [-1.45, +13.45] | within seed noise |" in md
    assert "| scratch | 3 | 51.00 ± 1.00 | +9.00 [+6.52, +11.48] | exceeds seed noise |" in md
    assert "| baseline | 3 | 42.00 ± 2.00 | - | (baseline) |" in md
    assert "**Ego-Exo does not beat the `baseline` row on these runs.**" in md
    assert "`egoexo` does not differ from `baseline` beyond seed noise" in md
    assert "`scratch` scores above `baseline` beyond seed noise" in md
    assert "Chance: 25.00." in md
    assert "| make_world | 11 | 11 |" in md and "| train_teachers | 119 | 119 |" in md  # stage times per run
    # each command's time, a reused (resumed) one marked as such
    assert "| train-teachers.ego | 42 | 42 |" in md and "| finetune.scratch-s0 | 3 (reused) | 3 |" in md
    assert "2 at a time" in md
    assert "| handobj | hand_ap50 | 0.81 | 0.81 |" in md
    # run-b's training outputs are missing: listed, not fatal
    assert any("run-b/finetuned/egoexo-s2/history.json" in m for m in done["missing"])
    assert "## Not found" in md


def test_every_picture_exists_and_is_referenced(runs, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "gallery-9.png").write_bytes(b"an earlier report's picture")
    done = write_report(list(runs), out)
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    in_md = images_in(md)
    in_html = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert in_md == in_html == done["images"]
    assert set(in_md) == {p.name for p in out.glob("*.png")}  # every file referenced, every reference a file
    assert {"curves-pretrain.png", "curves-finetune.png", "per-class-ap.png"} <= set(in_md)
    # gallery: clips of the two highest- and two lowest-ranked classes (3 classes: 3 clips)
    assert [i for i in in_md if i.startswith("gallery-")] == ["gallery-1.png", "gallery-2.png", "gallery-3.png"]
    assert all((out / i).stat().st_size > 1000 for i in in_md)
    assert "http" not in html and "<link" not in html  # nothing fetched from elsewhere
    assert "<table>" in html


def test_store_statistics_rank_the_classes(runs, tmp_path):
    md = Path(write_report([runs[0]], tmp_path / "r")["markdown"]).read_text()
    ranking = md.split("### Classes by mean Ego-Score")[1].split("###")[0]
    ranks = [line.split("|")[2].strip() for line in ranking.splitlines() if re.match(r"\| \d", line)]
    assert ranks == ["wash hands", "cut bread", "walk dog"]
    assert "Ego-Score 0.75" in md and "top objects knife" in md  # the gallery's captions
    assert "Most frequent top-1 object classes: knife 100.0 %." in md


def test_per_class_ap_is_averaged_over_seeds(runs):
    classes, targets, ap = per_class_ap(load_runs([runs[0]]), [])
    assert classes == EGO_CLASSES and targets.sum(axis=0).tolist() == [2, 2, 0]
    # "open door": egoexo seed 0 ranks it 7/12 (see test_metrics), seed 1 perfectly -> (7/12 + 1) / 2
    np.testing.assert_allclose(ap["egoexo"][:2], [1.0, (7 / 12 + 1) / 2])
    np.testing.assert_allclose(ap["baseline"][:2], [1.0, 1.0])
    assert np.isnan(ap["egoexo"][2])  # no positive


def test_per_class_table_in_the_report(runs, tmp_path):
    md = Path(write_report([runs[0]], tmp_path / "r")["markdown"]).read_text()
    assert "| open door | 2 | 50.00 | 58.33 | 100.00 | 79.17 |" in md  # chance (2 of 4 clips), scratch, baseline, egoexo
    assert "| sit |" not in md  # a class without a positive has no AP


def test_a_seed_in_two_run_directories_or_an_old_summary_is_refused(runs, tmp_path):
    make_run(tmp_path / "run-c", [1], with_outputs=False)
    with pytest.raises(PipelineError, match="seed 1 of row 'scratch'"):
        write_report([runs[0], tmp_path / "run-c"], tmp_path / "r")
    with pytest.raises(PipelineError, match="no demo-summary.json"):
        write_report([tmp_path], tmp_path / "r")
    write_json(tmp_path / "old" / "demo-summary.json", {"results": {"baseline": {"mAP": 0.4}}})
    with pytest.raises(PipelineError, match="no 'rows'"):
        write_report([tmp_path / "old"], tmp_path / "r")


def test_cli_writes_the_report(runs, tmp_path, capsys):
    assert main(["report", str(runs[0]), "--out", str(tmp_path / "r")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "r" / "report.html").is_file()


def test_the_headline_says_whether_egoexo_beats_the_baseline():
    from pipeline.report import verdict_lines
    from pipeline.stats import compare_rows

    base = SEED_VALUES["baseline"]
    above = {s: v + 0.09 + 0.01 * int(s) for s, v in base.items()}  # the scratch pattern: beyond noise
    below = {s: v - 0.09 - 0.01 * int(s) for s, v in base.items()}
    wins = verdict_lines(compare_rows({"baseline": base, "egoexo": above}, "baseline"), "baseline")
    loses = verdict_lines(compare_rows({"baseline": base, "egoexo": below}, "baseline"), "baseline")
    assert wins[0].startswith("**Ego-Exo beats the `baseline` row on these runs beyond seed noise.**")
    assert loses[0].startswith("**Ego-Exo does not beat") and "scores below `baseline` beyond seed noise" in loses[1]
