"""Stage 1 and 2 for real on a tiny world: a Ray run into a zarr store, then students from it."""
import json
import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.io.store import FAILED, OK, open_store
from pipeline.stages.evaluate import EvaluateConfig, run_evaluate
from pipeline.stages.extract import ExtractConfig, run_extract
from pipeline.stages.train import pretrain_defaults, run_train, TrainConfig
from pipeline.stages.train_teachers import TrainTeachersConfig, run_train_teachers
from pipeline.config import to_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teachers(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("teachers")
    ce = tiny_world / "charades_ego"
    cfg = load_config(TrainTeachersConfig, None, [
        f"manifest={ce / 'CharadesEgo_v1_train.csv'}", f"test_manifest={ce / 'CharadesEgo_v1_test.csv'}",
        f"video_root={ce / 'videos'}", f"ground_truth={tiny_world / 'ground_truth'}", f"out={out}",
        "ego.epochs=4", "object.epochs=3", "handobj.epochs=1", "handobj.frame_stride=4",
    ])
    return run_train_teachers(cfg)


@pytest.fixture(scope="module")
def store(tiny_world, teachers, tmp_path_factory):
    kin = tiny_world / "kinetics"
    out = tmp_path_factory.mktemp("signals") / "kinetics.zarr"
    cfg = load_config(ExtractConfig, None, [
        f"manifest={kin / 'kinetics_demo.csv'}", f"classes={kin / 'classes.txt'}", f"video_root={kin / 'videos'}",
        f"out={out}", "workers=2",
        "shard_rows=8", *[f"teachers.{k}={v}" for k, v in teachers["weights"].items()],
    ])
    result = run_extract(cfg)
    return out, result, cfg


def test_teacher_weights_carry_metadata(teachers):
    from teachers.base import load_teacher

    for kind, path in teachers["weights"].items():
        t = load_teacher(path)
        assert t.name == kind and len(t.meta["weights_sha256"]) == 64


def test_trained_teachers_beat_chance_on_held_out_clips(teachers):
    m = teachers["metrics"]
    # held-out = the Charades-Ego-like test split: other scripts, scenes and people
    assert m["ego"]["accuracy"] > m["ego"]["chance"] + 0.2
    assert m["object"]["accuracy"] > m["object"]["chance"] + 0.2
    assert 0.0 <= m["handobj"]["hand_ap50"] <= 1.0


def test_teacher_training_writes_tensorboard_events(teachers):
    """Each teacher's loss after every step, and its held-out metrics at the last step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for kind, path in teachers["weights"].items():
        events = EventAccumulator(str(Path(path).parent / "tb" / kind))
        events.Reload()
        loss = events.Scalars("train/loss")
        steps = [e.step for e in loss]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2
        assert all(np.isfinite(e.value) and e.value >= 0 for e in loss)
        for metric, value in teachers["metrics"][kind].items():
            logged, = events.Scalars(f"held_out/{metric}")
            assert logged.step == steps[-1] and logged.value == pytest.approx(value, abs=1e-4, nan_ok=True)


def test_store_shapes_dtypes_and_values(store, tiny_world):
    path, result, _ = store
    s = open_store(path)
    n = s.num_rows
    lines = (tiny_world / "kinetics" / "kinetics_demo.csv").read_text().strip().splitlines()
    assert n == len(lines) - 1 == result.ok
    F = s.num_frames
    assert F == 8  # 2 s clips at the teachers' 4 fps
    assert s.array("ego/logits").shape == (n, 2, 2) and str(s.array("ego/logits").dtype) == "float16"
    assert s.array("object/logits").shape[:2] == (n, F)
    assert s.array("handobj/boxes").shape == (n, F, 8, 7)
    ft = np.asarray(s.array("frame_time")[:])
    np.testing.assert_allclose(ft[:, 1] - ft[:, 0], 1 / 15 * 4, atol=0.07)  # ~0.25 s apart, on 15 fps frames
    obj = np.asarray(s.array("object/logits")[:], dtype=np.float32)
    assert np.isfinite(obj).all()
    assert np.abs(obj[0] - obj[1]).max() > 1e-3  # differs between clips
    ids = s.clip_ids()
    first = lines[1].split(",")
    assert ids[0] == f"{first[1]}_{int(first[2]):06d}_{int(first[3]):06d}"
    x = da.from_zarr(str(path), component="object/logits")
    assert x.shape == obj.shape


def test_rerun_resumes_and_changed_teachers_are_refused(store, teachers, tmp_path):
    path, _, cfg = store
    again = run_extract(cfg)
    assert again.skipped_shards == len(open_store(path).shards()) and again.ok == open_store(path).num_rows
    bad_cfg = load_config(ExtractConfig, None, [f"{k}={v}" for k, v in _flat(to_dict(cfg)).items() if k != "teachers.handobj"] + ["teachers.handobj=null"])
    with pytest.raises(PipelineError, match="different input"):
        run_extract(bad_cfg)


def test_a_rerun_retries_rows_whose_video_arrived_and_reports_progress(store, tiny_world, teachers, tmp_path,
                                                                       capsys):
    """A clip downloaded after the first run is computed by the rerun; the rows already done
    keep their values. Each run prints JSON progress lines and writes extract-report.json."""
    import json

    from pipeline.stages.extract import MISSING

    ref_path, _, ref_cfg = store
    kin = tmp_path / "kin"
    shutil.copytree(tiny_world / "kinetics", kin)
    late = sorted((kin / "videos").glob("*.mp4"))[3]
    late.rename(tmp_path / late.name)  # not downloaded yet
    args = [f"{k}={v}" for k, v in _flat(to_dict(ref_cfg)).items() if k not in ("video_root", "out")]
    cfg = load_config(ExtractConfig, None, args + [f"video_root={kin / 'videos'}", f"out={tmp_path / 's.zarr'}",
                                                   "progress_every_s=0.001"])
    first = run_extract(cfg)
    s = open_store(tmp_path / "s.zarr")
    row = list(s.clip_ids()).index(late.stem)
    assert (first.failed, first.missing) == (1, 1) and s.errors()[row] == MISSING
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert lines and lines[-1]["event"] == "extract-progress" and lines[-1]["done"] == lines[-1]["total"] == first.rows
    assert [x["done"] for x in lines] == sorted(x["done"] for x in lines)
    report = json.loads((tmp_path / "s.zarr" / "extract-report.json").read_text())
    assert (report["rows"], report["done"], report["missing"], report["pending"]) == (first.rows, first.rows - 1, 1, 0)
    # the missing video's row is marked, not decoded: it is not a computed clip
    assert report["failed_by_reason"] == {MISSING: 1} and report["clips_computed"] == first.rows - 1
    assert report["clips_per_s"] > 0 and 0 < report["teachers_busy_fraction"] <= 1 and report["gpu_hours"] == 0
    assert (report["gpu_hours_total"], report["runs"]) == (0, 1)
    before = {name: np.asarray(s.array(name)[:]) for name in ["frame_time", *s.output_names]}

    (tmp_path / late.name).rename(late)  # the download completed
    second = run_extract(cfg)
    assert (second.ok, second.failed) == (second.rows, 0)
    assert "retrying 1 rows that failed before" in capsys.readouterr().out
    report = json.loads((tmp_path / "s.zarr" / "extract-report.json").read_text())
    assert (report["done"], report["clips_computed"], report["skipped_shards"]) == (second.rows, 1,
                                                                                  len(s.shards()) - 1)
    assert report["runs"] == 2
    run_extract(cfg)  # nothing left to compute: the report of the run that computed stays
    assert "was already done; extract-report.json keeps the last computing run's figures" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.zarr" / "extract-report.json").read_text()) == report
    reference = open_store(ref_path)
    for name, old in before.items():
        now = np.asarray(s.array(name)[:])
        others = np.arange(len(now)) != row
        np.testing.assert_array_equal(now[others], old[others])  # untouched
        np.testing.assert_allclose(now[row], np.asarray(reference.array(name)[row]), atol=2e-3)  # as if never missing


def test_a_second_writer_is_refused_unless_its_shards_are_disjoint(store, tmp_path, capsys):
    """A live claim on shards 0:2 (another process, here a sleeping one) refuses a run over
    all shards with one message, and lets a --shards 2:8 run write its own shards."""
    import json
    import subprocess
    import sys

    from pipeline.cli import main
    from pipeline.io.store import PENDING, OK
    from pipeline.io.store_lock import StoreLock

    ref_path, _, ref_cfg = store
    args = [f"{k}={v}" for k, v in _flat(to_dict(ref_cfg)).items() if k not in ("out", "shards")]
    out = tmp_path / "s.zarr"
    shutil.copytree(ref_path, out)
    for name in ("status",):  # every row pending again
        open_store(out, mode="r+").array(name)[:] = PENDING
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        claim = StoreLock(out, (0, 2), 8)
        claim.dir.mkdir(exist_ok=True)
        claim.path.write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": other.pid,
                                          "started": "earlier", "shards": [0, 2],
                                          "beat": __import__("time").time()}))
        assert main(["run", "extract-teachers", *args, f"out={out}"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "being written by another extraction" in err[0] and f"pid {other.pid}" in err[0]
        assert (open_store(out).status() == PENDING).all()  # nothing was written
        assert main(["run", "extract-teachers", *args, f"out={out}", "--shards", "2:8"]) == 0
        status = open_store(out).status()
        assert (status[16:] == OK).all() and (status[:16] == PENDING).all()  # 8 shards of 8 rows
        assert json.loads((out / "extract-report.shards-2-8.json").read_text())["done"] == len(status) - 16
    finally:
        other.kill()
        other.wait()
    # the claim of a process that is gone does not block
    assert main(["run", "extract-teachers", *args, f"out={out}"]) == 0
    assert (open_store(out).status() == OK).all() and not list((out / ".locks").glob("*.json"))


@pytest.fixture
def s3_server(monkeypatch):
    """A local S3-compatible server (moto in server mode, over HTTP), and the AWS_* variables
    that point boto, s3fs and Ray's actors (which inherit the environment) at it."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
        monkeypatch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("signals")
    yield "s3://signals"
    server.stop()


def test_a_store_at_an_s3_url_is_written_read_and_trained_from(store, tiny_world, s3_server, tmp_path, capsys):
    """extract-teachers with out=s3://... (through zarr's fsspec store, against a real S3 API
    served by moto), then the same numbers as the local run, inspect, a resumed rerun, and a
    student trained from it."""
    import json

    from pipeline.cli import main
    from pipeline.io.store import read_store_file

    ref_path, _, ref_cfg = store
    url = f"{s3_server}/k400.zarr"
    args = [f"{k}={v}" for k, v in _flat(to_dict(ref_cfg)).items() if k not in ("out", "shards")]
    assert main(["run", "extract-teachers", *args, f"out={url}"]) == 0
    remote, local = open_store(url), open_store(ref_path)
    for name in ["status", "frame_time", *local.output_names]:
        np.testing.assert_allclose(np.asarray(remote.array(name)[:], np.float32),
                                   np.asarray(local.array(name)[:], np.float32), atol=2e-3, err_msg=name)
    assert json.loads(read_store_file(url, "extract-report.json"))["done"] == local.num_rows
    assert "manifest:" in read_store_file(url, "extract-teachers.config.yaml")
    capsys.readouterr()
    assert main(["inspect", url, "--verify"]) == 0
    assert f"signals store {url}" in capsys.readouterr().out
    assert run_extract(load_config(ExtractConfig, None, args + [f"out={url}"])).skipped_shards == len(local.shards())
    kin = tiny_world / "kinetics"
    cfg = load_config(TrainConfig, None, [
        f"manifest={kin / 'kinetics_demo.csv'}", f"classes={kin / 'classes.txt'}", f"video_root={kin / 'videos'}",
        f"out={tmp_path / 'student'}", f"signals={url}", "optim.epochs=1", "optim.batch_size=16", "optim.num_workers=1",
        "data.split=null",
    ], defaults=to_dict(pretrain_defaults()))
    hist = run_train(cfg)["history"]
    assert np.isfinite(hist[0]["loss_ego"]) and hist[0]["loss_ego"] > 0


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, prefix + k + "."))
        else:
            out[prefix + k] = "null" if v is None else v
    return out


def test_unreadable_video_marks_row_failed(tiny_world, teachers, tmp_path):
    kin = tmp_path / "kin"
    shutil.copytree(tiny_world / "kinetics", kin)
    videos = sorted((kin / "videos").glob("*.mp4"))
    videos[0].write_bytes(b"garbage" * 10)
    videos[1].unlink()
    base = [f"manifest={kin / 'kinetics_demo.csv'}", f"classes={kin / 'classes.txt'}", f"video_root={kin / 'videos'}",
            f"out={tmp_path / 's.zarr'}",
            "workers=1", *[f"teachers.{k}={v}" for k, v in teachers["weights"].items() if k == "object"]]
    with pytest.raises(PipelineError, match="1 of .* clips could not be decoded"):
        run_extract(load_config(ExtractConfig, None, base + ["max_failed_fraction=0.01"]))
    s = open_store(tmp_path / "s.zarr")  # completed rows were kept
    st, err, ids = s.status(), s.errors(), list(s.clip_ids())
    assert (st == FAILED).sum() == 2 and (st == OK).sum() == len(st) - 2
    assert err[ids.index(videos[1].stem)] == "video file not found"
    assert err[ids.index(videos[0].stem)] not in ("", "video file not found")
    with pytest.raises(PipelineError, match="1 of .* videos are missing"):
        run_extract(load_config(ExtractConfig, None, base + ["max_failed_fraction=0.5", "max_missing_fraction=0.01"]))
    result = run_extract(load_config(ExtractConfig, None, base + ["max_failed_fraction=0.5"]))
    assert (result.failed, result.missing) == (2, 1)


def test_student_loss_falls_and_evaluates(store, tiny_world, tmp_path):
    path, _, _ = store
    kin = tiny_world / "kinetics"
    cfg = load_config(TrainConfig, None, [
        f"manifest={kin / 'kinetics_demo.csv'}", f"classes={kin / 'classes.txt'}", f"video_root={kin / 'videos'}",
        f"out={tmp_path / 'student'}", f"signals={path}", "optim.epochs=4", "optim.batch_size=8", "optim.lr=0.05", "optim.num_workers=0",
        "data.split=null",
    ], defaults=to_dict(pretrain_defaults()))
    result = run_train(cfg)
    hist = result["history"]
    assert set(hist[0]) >= {"loss_action", "loss_ego", "loss_object", "loss_hand_map", "loss_object_map"}
    assert hist[-1]["loss"] < hist[0]["loss"]
    ckpt = torch.load(result["checkpoint"], weights_only=True)
    assert ckpt["model_args"]["num_objects"] == open_store(path).array("object/logits").shape[-1]
    assert ckpt["model_args"]["dropout"] == 0.0  # Ego-Exo pre-training runs without dropout
    assert ckpt["model_args"]["map_hidden_channels"] == 64  # slow_tiny's head: 1x3x3 conv -> 64, ReLU, 1x1x1
    ev = load_config(EvaluateConfig, None, [
        f"checkpoint={result['checkpoint']}", f"manifest={kin / 'kinetics_demo.csv'}", f"classes={kin / 'classes.txt'}",
        f"video_root={kin / 'videos'}", f"out={tmp_path / 'm.json'}", "split=val", "temporal_views=2",
        "spatial_crops=3", "num_workers=0",
    ])
    m = run_evaluate(ev)
    assert 0.0 <= m["top1"] <= 1.0 and m["clips"] >= 8 and m["ensemble"] == "sum"
    assert json.loads((tmp_path / "m.json").read_text())["top1"] == m["top1"]
    # The saved per-clip scores give the same metrics without the model.
    saved = np.load(m["predictions"])
    assert saved["scores_action"].shape == (m["clips"], 8)
    np.testing.assert_allclose(saved["scores_action"].sum(axis=1), 6.0, rtol=1e-5)  # 2 x 3 softmax views summed
    top1 = float((saved["scores_action"].argmax(axis=1) == saved["labels"]).mean())
    assert top1 == pytest.approx(m["top1"])
    # The same weights as a released Ego-Exo .pyth evaluate directly, to the same scores.
    from student.checkpoints import convert_checkpoint

    pyth = tmp_path / "released.pyth"
    convert_checkpoint(result["checkpoint"], pyth, to="pyslowfast")
    assert "head.projections.0.weight" in torch.load(pyth, weights_only=True)["model_state"]
    released = run_evaluate(load_config(EvaluateConfig, None, [
        f"checkpoint={pyth}", "arch=slow_tiny", f"manifest={kin / 'kinetics_demo.csv'}", f"classes={kin / 'classes.txt'}",
        f"video_root={kin / 'videos'}", f"out={tmp_path / 'released.json'}", "split=val", "temporal_views=2",
        "spatial_crops=3", "num_workers=0",
    ]))
    assert released["top1"] == m["top1"]
    np.testing.assert_allclose(np.load(released["predictions"])["scores_action"], saved["scores_action"], rtol=1e-5)


def test_generic_manifest_through_config(tiny_world, teachers, tmp_path):
    """A generic `path,label` CSV drives extract-teachers and train-student like a Kinetics CSV."""
    videos = sorted((tiny_world / "kinetics" / "videos").glob("*.mp4"))[:6]
    csv = tmp_path / "mine.csv"
    csv.write_text("path,label\n" + "".join(f"{v.name},{'a' if i % 2 else 'b'}\n" for i, v in enumerate(videos)))
    store = tmp_path / "mine.zarr"
    result = run_extract(load_config(ExtractConfig, None, [
        f"manifest={csv}", "manifest_format=generic", f"video_root={videos[0].parent}", f"out={store}",
        "workers=1", f"teachers.object={teachers['weights']['object']}",
    ]))
    assert result.ok == 6
    s = open_store(store)
    assert list(s.clip_ids()) == [v.stem for v in videos]
    # spans unknown in the CSV: rows get max_frames slots; each file's 2 s fill 8 of them, the rest NaN
    assert s.num_frames == 40
    ft = np.asarray(s.array("frame_time")[:])
    assert (np.isfinite(ft).sum(axis=1) == 8).all()
    cfg = load_config(TrainConfig, None, [
        f"manifest={csv}", "manifest_format=generic", f"video_root={videos[0].parent}", f"out={tmp_path / 'st'}",
        f"signals={store}", "loss.action=1", "loss.object=0.5", "optim.epochs=1", "optim.num_workers=0", "data.split=null",
        "model.backbone=slowfast_tiny",
    ])
    out = run_train(cfg)
    assert out["clips"] == 6 and "loss_object" in out["history"][0]
    # SlowFast takes its backbone's clip: 32 frames (slowfast_tiny: at 16 fps), slow at linspace indices.
    sampling = torch.load(out["checkpoint"], weights_only=True)["sampling"]
    assert (sampling["num_frames"], sampling["sampling_rate"], sampling["target_fps"]) == (32, 1, 16.0)
    assert sampling["slow_indices"] == [0, 4, 8, 13, 17, 22, 26, 31]


def test_inspect_summary_verify_and_picture(store, tmp_path, capsys):
    import cv2

    from pipeline.inspect import inspect_store, signal_stats

    path, result, _ = store
    clip = str(open_store(path).clip_ids()[0])
    code = inspect_store(str(path), verify=True, clip=clip, out=str(tmp_path / "c.png"))
    out = capsys.readouterr().out
    assert code == 0 and "verify: ok" in out and "object/logits" in out
    img = cv2.imread(str(tmp_path / "c.png"))
    assert img.shape[1] > img.shape[0] * 4  # a strip of the clip's teacher frames
    stats = signal_stats(path)
    assert stats["ok"] == result.ok and stats["frames_per_clip"] == 8
    assert 0.0 <= stats["ego_prob_mean"] <= 1.0
    assert sum(stats["object_top1_hist"]) == result.ok * 8  # one top-1 per valid teacher frame


def test_epic_frames_folder_through_extract(tiny_world, teachers, tmp_path):
    """EPIC-100 narrations over an extracted-frames folder (rgb_frames at 50 fps) go through stage 1."""
    import cv2

    from pipeline.io.video import read_frames, sample_times

    src = sorted((tiny_world / "kinetics" / "videos").glob("*.mp4"))[0]
    folder = tmp_path / "epic" / "P01" / "rgb_frames" / "P01_101"
    folder.mkdir(parents=True)
    frames = read_frames(src, sample_times(0, 2, 50)).frames  # the file's frames, as a 50 fps folder
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{i + 1:010d}.jpg"), f[..., ::-1])
    csv = tmp_path / "EPIC_100_validation.csv"
    csv.write_text(
        "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
        "start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n"
        'P01_101_0,P01,P01_101,00:00:00.10,00:00:00.00,00:00:01.00,1,50,take cup,take,0,cup,13,[\'cup\'],[13]\n'
        'P01_101_1,P01,P01_101,00:00:01.10,00:00:01.00,00:00:02.00,51,100,put cup,put,1,cup,13,[\'cup\'],[13]\n'
    )
    store = tmp_path / "epic.zarr"
    result = run_extract(load_config(ExtractConfig, None, [
        f"manifest={csv}", f"video_root={tmp_path / 'epic'}", f"out={store}", "workers=1",
        f"teachers.object={teachers['weights']['object']}",
    ]))
    assert result.ok == 2 and result.failed == 0
    s = open_store(store)
    ft = np.asarray(s.array("frame_time")[:])
    # 1 s narrations at the teachers' 4 fps: 4 frames each, on the folder's 50 fps grid
    np.testing.assert_allclose(ft[0, :4], [0.0, 0.24, 0.5, 0.74], atol=1e-4)
    np.testing.assert_allclose(ft[1, :4], [1.0, 1.24, 1.5, 1.74], atol=1e-4)
    assert s.attrs["manifest"]["format"] == "epic100"
    # Verb and noun heads trained together (summed cross-entropies), then verb/noun/action metrics.
    cfg = load_config(TrainConfig, None, [
        f"manifest={csv}", f"video_root={tmp_path / 'epic'}", f"out={tmp_path / 'epic-student'}", "data.split=null",
        "optim.epochs=1", "optim.batch_size=2", "optim.num_workers=0", "model.interaction_maps=false",
    ])
    trained = run_train(cfg, "finetune")
    assert {"loss_action", "loss_noun"} <= set(trained["history"][0])
    ckpt = torch.load(trained["checkpoint"], weights_only=True)
    assert (ckpt["model_args"]["num_actions"], ckpt["model_args"]["num_nouns"]) == (97, 300)
    m = run_evaluate(load_config(EvaluateConfig, None, [
        f"checkpoint={trained['checkpoint']}", f"manifest={csv}", f"video_root={tmp_path / 'epic'}",
        f"out={tmp_path / 'epic.json'}", "temporal_views=2", "spatial_crops=1", "num_workers=0",
    ]))
    assert m["clips"] == 2 and m["ensemble"] == "sum"
    saved = np.load(m["predictions"])
    assert saved["scores_action"].shape == (2, 97) and saved["scores_noun"].shape == (2, 300)
    assert saved["nouns"].tolist() == [13, 13]
    verb_hit = saved["scores_action"].argmax(1) == saved["labels"]
    noun_hit = saved["scores_noun"].argmax(1) == saved["nouns"]
    assert (m["top1"], m["noun_top1"], m["action_top1"]) == (verb_hit.mean(), noun_hit.mean(), (verb_hit & noun_hit).mean())


def test_ego_exo_star_keeps_the_map_loss_in_finetuning(tiny_world, teachers, store, tmp_path):
    """Ego-Exo*: a store over the first-person training videos, the map head initialised from
    pre-training, and the map loss (release weights 0.1 / 0.1 for Charades-Ego) in fine-tuning."""
    from pipeline.stages import load_stage_config
    from pipeline.stages.common import build_model

    ce, kin = tiny_world / "charades_ego", tiny_world / "kinetics"
    ego_store = tmp_path / "ego.zarr"
    run_extract(load_config(ExtractConfig, None, [
        f"manifest={ce / 'CharadesEgo_v1_train.csv'}", f"classes={ce / 'Charades_v1_classes.txt'}",
        f"video_root={ce / 'videos'}", f"out={ego_store}", "workers=1", f"teachers.handobj={teachers['weights']['handobj']}",
    ]))
    pre = run_train(load_stage_config("train-student", None, [
        f"manifest={kin / 'kinetics_demo.csv'}", f"classes={kin / 'classes.txt'}", f"video_root={kin / 'videos'}",
        f"out={tmp_path / 'pre'}", f"signals={store[0]}", "optim.epochs=1", "optim.num_workers=0",
    ]), "train-student")
    pre_ckpt = torch.load(pre["checkpoint"], weights_only=True)
    star = load_stage_config("finetune", None, [
        f"manifest={ce / 'CharadesEgo_v1_train.csv'}", f"classes={ce / 'Charades_v1_classes.txt'}",
        f"video_root={ce / 'videos'}", f"out={tmp_path / 'star'}", f"init={pre['checkpoint']}", f"signals={ego_store}",
        "loss.hand_map=0.1", "loss.object_map=0.1", "optim.epochs=1", "optim.num_workers=0", "optim.lr=1e-9",
        "data.split=null",
    ])
    result = run_train(star, "finetune")
    assert {"loss_action", "loss_hand_map", "loss_object_map"} <= set(result["history"][0])
    assert "loss_ego" not in result["history"][0]
    tuned = torch.load(result["checkpoint"], weights_only=True)
    assert tuned["model_args"]["num_actions"] == 8 and tuned["model_args"]["dropout"] == 0.5
    for key in ("map_head.hidden.weight", "map_head.score.weight"):  # initialised from pre-training (lr ~0 here)
        torch.testing.assert_close(tuned["model"][key], pre_ckpt["model"][key], rtol=0, atol=1e-6)
    fresh = build_model(tuned["model_args"]).state_dict()
    assert not torch.allclose(fresh["map_head.score.weight"], tuned["model"]["map_head.score.weight"])
