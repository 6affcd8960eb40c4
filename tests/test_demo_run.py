"""`pipeline demo --quick` through the CLI: every stage as the demo runs it (two at a time, each a
`pipeline run` process), the summary it collects, the report it writes, and a rerun that resumes."""
import json
import re

import pytest
import yaml

from pipeline.cli import main

pytestmark = pytest.mark.slow

ROWS = ("scratch", "baseline", "egoexo")
LABELS = {"train-teachers.handobj", "train-teachers.ego", "train-teachers.object",
          "train-student.baseline-s0", "train-student.egoexo-s0",
          "evaluate.pretrain-baseline-s0", "evaluate.pretrain-egoexo-s0",
          *[f"{stage}.{row}-s0" for stage in ("finetune", "evaluate") for row in ROWS]}


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    wd = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--workdir", str(wd), "--quick"]) == 0
    return wd, json.loads((wd / "demo-summary.json").read_text())


def test_every_stage_ran_as_its_command_and_the_summary_holds_its_metrics(quick_demo):
    wd, summary = quick_demo
    assert summary["quick"] is True and summary["jobs"] == 2 and summary["seeds"] == [0]
    assert set(summary["step_seconds"]) == LABELS and summary["reused"] == []
    for label in LABELS:  # each ran as the command a user can rerun, logged on its own
        stage, variant = label.split(".", 1)
        first = (wd / "logs" / f"{label}.log").read_text().splitlines()[0]
        assert first == f"$ pipeline run {stage} --config {wd / 'configs' / f'{label}.yaml'}"
    # the numbers collected are the evaluations' own
    for row in ROWS:
        m = json.loads((wd / "metrics" / f"{row}-s0.json").read_text())
        assert summary["rows"][row] == {"0": m["mAP"]} and 0.0 <= m["mAP"] <= 1.0
        assert summary["chance_mAP"] == m["chance_mAP"]
        assert (wd / "finetuned" / f"{row}-s0" / "checkpoint.pt").is_file()
    for variant in ("baseline", "egoexo"):
        m = json.loads((wd / "metrics" / f"pretrain-{variant}-s0.json").read_text())
        assert summary["pretrain_val_top1"][variant] == {"0": m["top1"]}
    # the fine-tunes started from the students of their row
    for row in ("baseline", "egoexo"):
        cfg = yaml.safe_load((wd / "finetuned" / f"{row}-s0" / "finetune.config.yaml").read_text())
        assert cfg["init"] == str(wd / "students" / f"{row}-s0" / "checkpoint.pt")
    # each teacher trained in its own folder and the extraction used all three
    for kind in ("ego", "object", "handobj"):
        done = json.loads((wd / "teachers" / kind / "teachers.json").read_text())
        assert summary["teachers"][kind] == done["metrics"][kind]
    extract = (wd / "configs" / "extract-teachers.yaml").read_text()
    assert all(str(wd / "teachers" / kind / f"{kind}.pt") in extract for kind in ("ego", "object", "handobj"))


def test_the_report_renders_from_the_run_with_every_picture(quick_demo):
    wd, _ = quick_demo
    md = (wd / "report" / "report.md").read_text()
    html = (wd / "report" / "report.html").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(pictures) >= 4
    for name in pictures:
        assert (wd / "report" / name).is_file() and name in html
    assert "| train-student.egoexo-s0 |" in md  # each run's time


def test_a_rerun_resumes_every_step_to_the_same_numbers(quick_demo, capsys):
    wd, first = quick_demo
    assert main(["demo", "--workdir", str(wd), "--quick"]) == 0
    again = json.loads((wd / "demo-summary.json").read_text())
    assert again["rows"] == first["rows"] and again["pretrain_val_top1"] == first["pretrain_val_top1"]
    trained = {label for label in LABELS if not label.startswith("evaluate.")}
    assert set(again["reused"]) == trained | {"make_world"}
    assert "world exists" in capsys.readouterr().out


def test_a_quick_demo_in_a_full_demos_workdir_is_one_error(tmp_path, capsys):
    world = tmp_path / "world"
    world.mkdir()
    (world / "demo_world.json").write_text(json.dumps({"seed": 0, "scale": 1.0}))
    assert main(["demo", "--workdir", str(tmp_path), "--quick"]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "seed 0, scale 0.12 (--quick): give it its own --workdir" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"] and out == ""  # nothing written or begun


def test_a_workdir_of_the_previous_demo_layout_is_one_error(tmp_path, capsys):
    (tmp_path / "teachers").mkdir()
    (tmp_path / "teachers" / "teachers.json").write_text("{}")
    assert main(["demo", "--workdir", str(tmp_path), "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "earlier version of the demo" in err


def test_a_workdir_of_the_16_channel_student_is_one_error(tmp_path, capsys):
    import torch

    # A 16-channel slow_tiny's stem conv (16, 3, 1, 7, 7), as the demo wrote before it narrowed.
    (tmp_path / "students" / "baseline-s0").mkdir(parents=True)
    torch.save({"model": {"backbone.s1.pathway0_stem.conv.weight": torch.zeros(16, 3, 1, 7, 7)}},
               tmp_path / "students" / "baseline-s0" / "last.pt")
    assert main(["demo", "--workdir", str(tmp_path), "--quick"]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "students/baseline-s0/last.pt does not fit slow_tiny" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["students"] and out == ""  # nothing written or begun
    # Today's width passes the check (and the demo would resume it).
    torch.save({"model": {"backbone.s1.pathway0_stem.conv.weight": torch.zeros(12, 3, 1, 7, 7)}},
               tmp_path / "students" / "baseline-s0" / "last.pt")
    from pipeline.demo import _stale_students
    assert _stale_students(tmp_path) == []
