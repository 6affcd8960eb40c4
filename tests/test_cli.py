"""The command surface: help text, one clear error line (no traceback) and exit codes."""
import subprocess
import sys

import pytest

from pipeline.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("cmd", [[], ["run"], ["run", "extract-teachers"], ["run", "train-student"], ["inspect"], ["data", "make-demo"], ["demo"],
                                 ["convert-checkpoint"], ["student", "list"], ["report"]])
def test_help_has_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out


def test_unknown_config_key_exits_2_naming_it(tmp_path):
    r = run_cli("run", "train-student", "--manifest", "m.csv", "--video-root", ".", "--out", str(tmp_path / "o"), "optim.epochz=3")
    assert r.returncode == 2
    assert "optim.epochz" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_zero_workers_exits_2_before_anything_is_written(tmp_path):
    r = run_cli("run", "extract-teachers", "--manifest", "m.csv", "--video-root", ".", "--out", str(tmp_path / "s.zarr"),
                "--workers", "0", "teachers.ego=ego.pt")
    assert r.returncode == 2 and r.stderr.strip() == "error: config: 'workers' must be at least 1"
    assert not (tmp_path / "s.zarr").exists()


def test_wrong_type_exits_2(tmp_path):
    r = run_cli("run", "extract-teachers", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "config file not found" in r.stderr
    r = run_cli("run", "train-student", "optim.epochs=many", "manifest=a", "video_root=.", "out=o")
    assert r.returncode == 2 and "optim.epochs" in r.stderr and "integer" in r.stderr


def test_missing_manifest_is_one_line(tmp_path):
    r = run_cli("run", "train-student", "--manifest", str(tmp_path / "nope.csv"), "--video-root", str(tmp_path),
                "--out", str(tmp_path / "o"), "loss.ego=0", "loss.object=0", "loss.hand_map=0", "loss.object_map=0")
    assert r.returncode == 1
    assert "manifest not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()  # nothing written before the input was checked


def test_distillation_without_store_is_refused(tmp_path):
    r = run_cli("run", "train-student", "--manifest", "m.csv", "--video-root", ".", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--signals" in r.stderr


def test_inspect_missing_store():
    r = run_cli("inspect", "/nonexistent/store.zarr")
    assert r.returncode == 1 and "signals store not found" in r.stderr


def test_data_check_reports_lines_and_exits_nonzero_only_when_strict(tmp_path):
    from pipeline.io.video import write_video
    import numpy as np

    videos = tmp_path / "videos"
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    for yid in ("aaaaaaaaaaa", "bbbbbbbbbbb"):
        write_video(videos / "train" / f"{yid}_000010_000020.mp4", frames, fps=4)
    csv = tmp_path / "train.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,aaaaaaaaaaa,10,20,train\n"  # line 2: fine (under train/)
        "abseiling,bbbbbbbbbbb,10,20,train\n"  # line 3: fine
        "archery,ccccccccccc,5,15,train\n"  # line 4: missing file
        "archery,aaaaaaaaaaa,10,20,train\n"  # line 5: duplicate of line 2
        "archery,ddddddddddd,ten,20,train\n"  # line 6: bad timestamp
        "archery,eeeeeeeeeee,10\n"  # line 7: malformed row
    )
    r = run_cli("data", "check", "--manifest", str(csv), "--video-root", str(videos))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for line in ("4", "5", "6", "7"):
        assert f"line {line}" in out, out
    assert "ccccccccccc" in out
    strict = run_cli("data", "check", "--manifest", str(csv), "--video-root", str(videos), "--strict")
    assert strict.returncode == 1


def test_print_config_shows_stage_defaults_and_overrides(capsys):
    import yaml

    assert main(["run", "train-student", "--print-config", "optim.epochs=3"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["epochs"] == 3
    # train-student defaults to the paper's loss weights (Ego-Exo configs), finetune to the action loss only
    assert (cfg["loss"]["action"], cfg["loss"]["ego"], cfg["loss"]["object"], cfg["loss"]["hand_map"]) == (0.5, 0.1, 0.5, 1.0)
    assert main(["run", "finetune", "--print-config"]) == 0
    ft = yaml.safe_load(capsys.readouterr().out)
    assert ft["loss"]["ego"] == 0.0 and ft["data"]["view"] == "ego"
