"""`pipeline signals import-egoexo / export-egoexo` on fabricated Ego-Exo release files.

The files are written with the layout facebookresearch/Ego-Exo reads (kinetics_aux.py):
pickled dicts {train-list path: vector} (2 exo/ego logits, 1000 ImageNet logits), and per
video `<name without extension>.npy` holding one (obj_dets, hand_dets) pair per native frame,
each None or float32 [M, 10] as 100DOH's demo.py builds it: x1, y1, x2, y2 in pixels, score,
contact state, offset magnitude, dx, dy, hand side.
"""
import builtins
import os
import pickle

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.io.store import FAILED, OK, open_store

FPS, WIDTH, HEIGHT = 30, 320, 240
TRAIN_LIST = ["train/abseiling/aaa_000010_000020.mp4", "train/abseiling/bbb_000000_000010.mp4",
              "train/zumba/ccc_000005_000015.mp4"]
EGO = {TRAIN_LIST[0]: [1.5, -0.5], TRAIN_LIST[1]: [-2.0, 0.25], TRAIN_LIST[2]: [0.0, 1.0]}
OBJECT = np.linspace(-3, 3, 1000, dtype=np.float32)
HAND_AT_7 = [32, 48, 96, 120, 0.9, 3, 0.4, 0.06, -0.08, 1]      # pixels; portable-object contact, right hand
OBJECT_AT_7 = [160, 120, 240, 200, 0.7, 4, 0.0, 0.0, 0.0, 0]    # 100DOH gives objects a contact column too
HAND_AT_8 = [300, 200, 319, 239, 0.95, 1, 0.0, 0.0, 0.0, 0]     # a frame the store does not sample


def _detections(frames, boxes):
    """An object array [frames, 2] of (obj_dets, hand_dets), None where a frame has none."""
    entries = np.empty((frames, 2), dtype=object)
    entries[:] = None
    for frame, (obj, hand) in boxes.items():
        entries[frame, 0] = None if obj is None else np.asarray([obj], np.float32)
        entries[frame, 1] = None if hand is None else np.asarray([hand], np.float32)
    return entries


@pytest.fixture
def release(tmp_path):
    """Release files for clips aaa (3 s) and bbb (2 s); ccc is in the ego file and has detections
    but is missing from the object file."""
    aux = tmp_path / "aux"
    (aux / "k400_handobj_predicts").mkdir(parents=True)
    with open(aux / "k400_ego_predicts.pkl", "wb") as f:
        pickle.dump({k: np.asarray(v, np.float32) for k, v in EGO.items()}, f)
    with open(aux / "k400_IN_predicts.pkl", "wb") as f:
        pickle.dump({TRAIN_LIST[0]: OBJECT, TRAIN_LIST[1]: -OBJECT}, f)
    np.save(aux / "k400_handobj_predicts" / "aaa_000010_000020.npy",
            _detections(90, {7: (OBJECT_AT_7, HAND_AT_7), 8: (None, HAND_AT_8)}), allow_pickle=True)
    np.save(aux / "k400_handobj_predicts" / "bbb_000000_000010.npy", _detections(60, {}), allow_pickle=True)
    np.save(aux / "k400_handobj_predicts" / "ccc_000005_000015.npy", _detections(60, {}), allow_pickle=True)
    manifest = tmp_path / "train.csv"  # a PySlowFast train list: "path label"
    manifest.write_text("".join(f"{p} {i // 2}\n" for i, p in enumerate(TRAIN_LIST)))
    return {"aux": aux, "manifest": manifest, "tmp": tmp_path}


def _import(release, out, *extra):
    aux = release["aux"]
    return main(["signals", "import-egoexo", "--ego", str(aux / "k400_ego_predicts.pkl"),
                 "--object", str(aux / "k400_IN_predicts.pkl"), "--handobj", str(aux / "k400_handobj_predicts"),
                 "--manifest", str(release["manifest"]), "--out", str(out), "--max-frames", "16", *extra])


def test_import_puts_the_release_values_where_the_store_keeps_them(release):
    from pipeline.io.store import FAILED, OK, open_store

    out = release["tmp"] / "k400.zarr"
    assert _import(release, out, "--native-fps", str(FPS), "--frame-size", f"{WIDTH}x{HEIGHT}") == 0
    store = open_store(out)
    assert store.clip_ids().tolist() == ["train/abseiling/aaa_000010_000020", "train/abseiling/bbb_000000_000010",
                                         "train/zumba/ccc_000005_000015"]
    assert store.status().tolist() == [OK, OK, FAILED]
    assert store.errors()[2] == "not in the release files: k400_IN_predicts.pkl"
    row = store.read_row(0)
    # 4 fps over a 90-frame 30 fps video: asked at 0, 0.25, ..., 2.75 s; the native frame on screen
    # at 0.25 s is floor(0.25 * 30) = 7, shown from 7/30 s; from 3.0 s on there is no frame.
    expected_index = np.floor(np.arange(12) / 4 * 30 + 1e-6)
    np.testing.assert_allclose(row["frame_time"][:12], expected_index / 30, atol=1e-6)
    assert np.isnan(row["frame_time"][12:]).all() and row["frame_time"].shape == (16,)
    np.testing.assert_array_equal(row["ego/logits"], [[1.5, -0.5]])
    np.testing.assert_array_equal(row["object/logits"][:12], np.broadcast_to(OBJECT.astype(np.float16), (12, 1000)))
    assert not row["object/logits"][12:].any()
    boxes = row["handobj/boxes"]
    assert boxes.shape == (16, 8, 7)
    # hand 32,48,96,120 px of 320x240 -> 0.1, 0.2, 0.3, 0.5; kind 0; contact 3 kept. Object: kind 1, contact 0.
    np.testing.assert_allclose(boxes[1, 0], [0.1, 0.2, 0.3, 0.5, 0.9, 0, 3], atol=3e-4)
    np.testing.assert_allclose(boxes[1, 1], [0.5, 0.5, 0.75, 200 / 240, 0.7, 1, 0], atol=3e-4)
    assert not boxes[1, 2:].any()
    assert not np.delete(boxes, 1, axis=0).any()  # frame 8's hand is on no sampled frame
    assert store.attrs["imported"]["from"] == "imported from the Ego-Exo release"
    assert store.attrs["imported"]["files"]["ego"]["entries"] == 3
    assert store.attrs["teachers"]["ego"]["spec"]["num_frames"] == 16  # one ego window spans the clip


def test_imported_store_passes_inspect_and_gives_the_students_targets(release):
    from pipeline.inspect import verify_store
    from pipeline.io.store import open_store
    from student.dataset import window_times
    from student.targets import interaction_map_targets, soft_logits_for_window

    out = release["tmp"] / "k400.zarr"
    _import(release, out, "--native-fps", str(FPS), "--frame-size", f"{WIDTH}x{HEIGHT}")
    assert verify_store(out) == []
    assert main(["inspect", str(out), "--verify"]) == 0
    store = open_store(out)
    row = store.read_row(0)
    ego_window = store.attrs["teachers"]["ego"]["spec"]["num_frames"]
    np.testing.assert_array_equal(
        soft_logits_for_window(row["ego/logits"], window_times(row["frame_time"], ego_window), 0.5, 1.5), [1.5, -0.5])
    # The whole frame on an 8x8 grid at 0.25 s: the hand covers cells x 0..2 (0.1*8, 0.3*8), y 1..4.
    maps = interaction_map_targets(row["handobj/boxes"], row["frame_time"], np.array([0.25]), (0, 0, 1, 1), False, (8, 8))
    hand = np.zeros((8, 8), np.float32)
    hand[1:5, 0:3] = np.float16(0.9)
    np.testing.assert_array_equal(maps[0, 0], hand)
    obj = np.zeros((8, 8), np.float32)
    obj[4:7, 4:7] = np.float16(0.7)
    np.testing.assert_array_equal(maps[1, 0], obj)


def test_video_root_gives_each_videos_rate_and_size_and_stems_match_keys(release, tmp_path):
    """A generic manifest names the files differently from the release's keys: the file name matches."""
    from pipeline.io.store import open_store
    from pipeline.io.video import write_video

    videos = tmp_path / "videos"
    write_video(videos / "aaa_000010_000020.mp4", np.zeros((15, 48, 64, 3), np.uint8), fps=15)
    manifest = tmp_path / "clips.csv"
    manifest.write_text("path,label\naaa_000010_000020.mp4,abseiling\n")
    aux = release["aux"]
    dets = _detections(15, {3: (None, [16, 12, 32, 24, 0.8, 0, 0, 0, 0, 0])})
    np.save(aux / "k400_handobj_predicts" / "aaa_000010_000020.npy", dets, allow_pickle=True)
    out = tmp_path / "v.zarr"
    assert main(["signals", "import-egoexo", "--ego", str(aux / "k400_ego_predicts.pkl"), "--handobj",
                 str(aux / "k400_handobj_predicts"), "--manifest", str(manifest), "--video-root", str(videos),
                 "--out", str(out)]) == 0
    row = open_store(out).read_row(0)
    # 15 fps: teacher frame 1 asked at 0.25 s is native frame floor(3.75) = 3; 64x48 pixels.
    np.testing.assert_allclose(row["frame_time"][:4], [0, 3 / 15, 7 / 15, 11 / 15], atol=1e-6)
    np.testing.assert_allclose(row["handobj/boxes"][1, 0], [0.25, 0.25, 0.5, 0.5, 0.8, 0, 0], atol=3e-4)
    np.testing.assert_array_equal(row["ego/logits"], [[1.5, -0.5]])


class _RunsCode:
    def __init__(self, func, *args):
        self.call = (func, args)

    def __reduce__(self):
        return self.call


@pytest.mark.parametrize("where", ["pkl", "npy"])
@pytest.mark.parametrize("func, name", [(builtins.open, "io.open"), (os.system, f"{os.name}.system")])
def test_a_release_file_that_would_create_a_file_is_refused(release, capsys, where, func, name):
    target = release["tmp"] / "created-by-pickle"
    evil = _RunsCode(func, str(target), "w") if func is builtins.open else _RunsCode(func, f"touch {target}")
    aux = release["aux"]
    if where == "pkl":
        with open(aux / "k400_ego_predicts.pkl", "wb") as f:
            pickle.dump({TRAIN_LIST[0]: evil}, f)
    else:
        entries = _detections(90, {})
        entries[0, 1] = evil
        np.save(aux / "k400_handobj_predicts" / "aaa_000010_000020.npy", entries, allow_pickle=True)
    out = release["tmp"] / "k400.zarr"
    code = _import(release, out, "--native-fps", str(FPS), "--frame-size", f"{WIDTH}x{HEIGHT}")
    if where == "pkl":  # the whole file is needed before any row: one line, exit 1
        assert code == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
    else:  # one video's detections: its row fails with the reason, the others are imported
        assert code == 0
        store = open_store(out)
        row = [i for i, c in enumerate(store.clip_ids()) if "aaa_000010_000020" in c][0]
        err = store.errors()[row]
        assert store.status()[row] == FAILED
    assert f"refusing to load {name}" in err and "nothing from it was run" in err
    assert ("k400_ego_predicts.pkl" if where == "pkl" else "aaa_000010_000020.npy") in err
    assert not target.exists()


def test_import_needs_the_videos_rate_and_size(release, capsys):
    assert _import(release, release["tmp"] / "k.zarr", "--native-fps", "30") == 1
    assert "--video-root" in capsys.readouterr().err


def test_no_matching_keys_is_an_error_that_shows_both_forms(release, tmp_path, capsys):
    manifest = tmp_path / "other.csv"
    manifest.write_text("elsewhere/zzz.mp4 0\n")
    aux = release["aux"]
    code = main(["signals", "import-egoexo", "--ego", str(aux / "k400_ego_predicts.pkl"), "--manifest", str(manifest),
                 "--native-fps", "30", "--frame-size", "320x240", "--out", str(tmp_path / "z.zarr")])
    err = capsys.readouterr().err
    assert code == 1 and "none of the 1 manifest rows" in err and "train/" in err and "elsewhere/zzz.mp4" in err


def test_export_writes_the_release_layout(release):
    from pipeline.stages.egoexo_release import load_release_npy, load_release_pickle

    store, out = release["tmp"] / "k400.zarr", release["tmp"] / "exported"
    _import(release, store, "--native-fps", str(FPS), "--frame-size", f"{WIDTH}x{HEIGHT}")
    assert main(["signals", "export-egoexo", "--store", str(store), "--manifest", str(release["manifest"]),
                 "--native-fps", str(FPS), "--frame-size", f"{WIDTH}x{HEIGHT}", "--out", str(out)]) == 0
    ego = load_release_pickle(out / "k400_ego_predicts.pkl")
    obj = load_release_pickle(out / "k400_IN_predicts.pkl")
    assert sorted(ego) == sorted(obj) == TRAIN_LIST[:2]  # keyed by the train-list path; ccc failed
    np.testing.assert_array_equal(ego[TRAIN_LIST[1]], [-2.0, 0.25])
    np.testing.assert_array_equal(obj[TRAIN_LIST[0]], OBJECT.astype(np.float16))
    assert sorted(p.name for p in (out / "k400_handobj_predicts").iterdir()) == ["aaa_000010_000020.npy",
                                                                                "bbb_000000_000010.npy"]
    raw = np.load(out / "k400_handobj_predicts" / "aaa_000010_000020.npy", allow_pickle=True)
    assert raw.shape == (90, 2)  # frames until 0.25 s after the last teacher frame (82/30 s): ceil(89.5)
    frames = load_release_npy(out / "k400_handobj_predicts" / "aaa_000010_000020.npy")
    obj7, hand7 = frames[7]
    np.testing.assert_allclose(hand7[0, :6], HAND_AT_7[:6], atol=0.1)
    np.testing.assert_allclose(obj7[0, :6], OBJECT_AT_7[:5] + [0], atol=0.1)
    assert hand7.shape == (1, 10) and np.isnan(hand7[0, 6:]).all()
    assert frames[8][1][0, 0] == hand7[0, 0]  # native frame 8 (0.267 s) is nearest teacher frame 1 (0.233 s)
    assert frames[0] == (None, None)


def test_import_of_an_export_reproduces_the_store(release):
    from pipeline.io.store import open_store

    first, out, second = (release["tmp"] / n for n in ("a.zarr", "exported", "b.zarr"))
    flags = ["--native-fps", str(FPS), "--frame-size", f"{WIDTH}x{HEIGHT}"]
    _import(release, first, *flags)
    main(["signals", "export-egoexo", "--store", str(first), "--manifest", str(release["manifest"]), *flags,
          "--out", str(out)])
    main(["signals", "import-egoexo", "--ego", str(out / "k400_ego_predicts.pkl"), "--object",
          str(out / "k400_IN_predicts.pkl"), "--handobj", str(out / "k400_handobj_predicts"), "--manifest",
          str(release["manifest"]), "--out", str(second), "--max-frames", "16", *flags])
    a, b = open_store(first), open_store(second)
    assert a.status().tolist() == b.status().tolist()
    for i in range(2):
        ra, rb = a.read_row(i), b.read_row(i)
        for name in ("frame_time", "ego/logits", "object/logits", "handobj/boxes"):
            np.testing.assert_array_equal(ra[name], rb[name], err_msg=name)


def test_npy_as_a_list_of_pairs_reads_as_the_frames_by_pairs_array(tmp_path):
    """np.save of per-frame tuples can give [frames, 2] (numpy splits the pairs) or [frames] of tuples."""
    from pipeline.stages.egoexo_release import load_release_npy

    by_pairs = _detections(3, {1: (OBJECT_AT_7, HAND_AT_7)})
    tuples = np.empty(3, dtype=object)
    for i in range(3):
        tuples[i] = tuple(by_pairs[i])
    np.save(tmp_path / "pairs.npy", by_pairs, allow_pickle=True)
    np.save(tmp_path / "tuples.npy", tuples, allow_pickle=True)
    a, b = load_release_npy(tmp_path / "pairs.npy"), load_release_npy(tmp_path / "tuples.npy")
    assert a[0] == b[0] == (None, None) and len(a) == len(b) == 3
    np.testing.assert_array_equal(a[1][1], np.float32([HAND_AT_7]))
    np.testing.assert_array_equal(b[1][0], np.float32([OBJECT_AT_7]))
