"""Files users mistake for manifests: one line naming the problem, no traceback."""
import pickle

import pytest

from pipeline.cli import main

KINETICS = "label,youtube_id,time_start,time_end,split\n"


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_epic_pkl_beside_the_csv_is_named(tmp_path, capsys):
    pkl = tmp_path / "EPIC_100_validation.pkl"
    pkl.write_bytes(pickle.dumps({"narration_id": ["P01_01_0"], "start_frame": [1]}, protocol=4))
    code, _, err = _run(["data", "check", "--manifest", str(pkl), "--video-root", str(tmp_path)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "is not a text manifest" in err and "pass the .csv" in err and "Traceback" not in err
    code, _, err = _run(["run", "train-student", f"manifest={pkl}", f"video_root={tmp_path}",
                         f"out={tmp_path / 'student'}", "loss.ego=0", "loss.object=0", "loss.hand_map=0",
                         "loss.object_map=0"], capsys)
    assert code == 1 and "not a text manifest" in err


def test_a_folder_is_not_a_manifest(tmp_path, capsys):
    code, _, err = _run(["data", "check", "--manifest", str(tmp_path), "--video-root", str(tmp_path)], capsys)
    assert code == 1 and "is a folder, not a manifest file" in err


def test_unknown_format_names_the_flag(tmp_path, capsys):
    odd = tmp_path / "odd.txt"
    odd.write_text("something else entirely\n")
    code, _, err = _run(["data", "check", "--manifest", str(odd), "--video-root", str(tmp_path)], capsys)
    assert code == 1 and "--format" in err and "manifest_format" in err


def test_nearly_all_videos_missing_is_not_ok(tmp_path, capsys):
    # 19 of 20 videos absent: a wrong video root, not the 2-13 % a Kinetics download lacks.
    csv = tmp_path / "train.csv"
    csv.write_text(KINETICS + "".join(f"abseiling,v{i:02d},0,10,train\n" for i in range(20)))
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v00_000000_000010.mp4").write_bytes(b"")
    code, out, _ = _run(["data", "check", "--manifest", str(csv), "--video-root", str(tmp_path / "videos"), "--strict"], capsys)
    assert code == 1
    assert "missing videos: 19 of 20 clips (95.0 %)" in out and "is the video root right?" in out
    assert out.strip().endswith("result: PROBLEMS")
    # 2 of 20 (10 %) missing is normal: reported, still OK.
    for i in range(1, 18):
        (tmp_path / "videos" / f"v{i:02d}_000000_000010.mp4").write_bytes(b"")
    code, out, _ = _run(["data", "check", "--manifest", str(csv), "--video-root", str(tmp_path / "videos"), "--strict"], capsys)
    assert "missing videos: 2 of 20" in out and out.strip().endswith("result: OK")
    assert code == 1  # --strict still counts any missing video as a problem
