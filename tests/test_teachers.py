"""The teacher interface: registry, predict shapes/padding, weights files. Untrained tiny models only."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, roi_align

import teachers
from teachers import base, ego, handobj, objects, preprocess
from teachers.base import InputSpec, TeacherWeightsError, load_teacher, save_teacher

KINDS = ["ego", "handobj", "object"]
OBJECT_CLASSES = ["cup", "knife", "phone"]


def _recipe(kind: str):
    """(build kwargs, arch, meta) of a tiny untrained teacher of each kind."""
    if kind == "ego":
        return ego.build, ego.DEFAULT_ARCH, {"width": 8}, ego.make_meta(train={"accuracy": np.float32(0.5)})
    if kind == "object":
        return objects.build, objects.DEFAULT_ARCH, {"num_classes": 3, "width": 8}, objects.make_meta(OBJECT_CLASSES)
    return handobj.build, handobj.DEFAULT_ARCH, {}, handobj.make_meta()


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    """One saved untrained teacher per kind."""
    root = tmp_path_factory.mktemp("teachers")
    files = {}
    for kind in KINDS:
        build, arch, arch_kwargs, meta = _recipe(kind)
        torch.manual_seed(0)
        files[kind] = save_teacher(root / f"{kind}.pt", build(arch, **arch_kwargs), kind, arch, arch_kwargs, meta)
    return files


@pytest.fixture(scope="module")
def loaded(weights_files):
    return {kind: load_teacher(path) for kind, path in weights_files.items()}


def _frames(b: int, f: int, h: int, w: int, seed: int) -> np.ndarray:
    """Random coloured rectangles on noise, so every frame differs."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (b, f, h, w, 3), dtype=np.uint8)
    for img in frames.reshape(-1, h, w, 3):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0 : y0 + h // 3, x0 : x0 + w // 3] = rng.integers(0, 256, 3)
    return frames


def _times(b: int, f: int, valid: list[int]) -> np.ndarray:
    times = np.full((b, f), np.nan, np.float32)
    for i, n in enumerate(valid):
        times[i, :n] = np.arange(n) / 4.0
    return times


# ---------------------------------------------------------------- registry and spec


def test_registry_lists_every_kind_and_refuses_duplicates():
    assert teachers.list_teachers() == sorted([*KINDS, "hoi100doh"])  # hoi100doh: test_teachers_hoi100doh.py
    assert base.teacher_class("ego") is ego.EgoTeacher
    with pytest.raises(ValueError, match="already registered"):
        teachers.register_teacher("ego")(ego.EgoTeacher)
    assert base.teacher_class("ego") is ego.EgoTeacher  # the failed registration changed nothing


def test_input_spec_round_trips_through_a_dict():
    spec = InputSpec(frame_rate=4.0, size=64, mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0), num_frames=4)
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert InputSpec.from_dict(InputSpec(2.0, 224).to_dict()).num_frames is None


def test_last_valid_index_forward_fills_and_back_fills_leading_gaps():
    valid = np.array([[True, False, True, False, False], [False, False, True, True, False], [False] * 5])
    assert preprocess.last_valid_index(valid).tolist() == [[0, 0, 2, 2, 2], [2, 2, 2, 3, 3], [0, 0, 0, 0, 0]]


def test_to_tensor_normalises_per_channel():
    spec = InputSpec(4.0, 2, mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 2.0))
    x = preprocess.to_tensor(np.full((1, 2, 2, 3), 255, np.uint8), spec)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == pytest.approx([1.0, 1.0, 0.0])


# ---------------------------------------------------------------- predict


@pytest.mark.parametrize("kind", KINDS)
def test_predict_shapes_dtypes_match_output_shapes(loaded, kind):
    teacher = loaded[kind]
    f = 7
    out = teacher.predict(_frames(2, f, 48, 80, seed=1), _times(2, f, [7, 3]))
    shapes = teacher.output_shapes(f)
    assert set(out) == set(shapes)
    for key, (tail, dtype) in shapes.items():
        assert out[key].shape == (2, *tail)
        assert out[key].dtype == np.float32
        assert dtype == "float16"
        assert np.isfinite(out[key]).all()
    expected = {
        "ego": {"ego/logits": (2, 2)},  # W = ceil(7 / 4)
        "object": {"object/logits": (7, 3)},
        "handobj": {"handobj/boxes": (7, handobj.MAX_BOXES, 7)},
    }[kind]
    assert {k: v[0] for k, v in shapes.items()} == expected


def test_ego_window_count_is_ceil_of_frames_over_window():
    teacher = ego.EgoTeacher(ego.build(width=8), ego.make_meta())
    for f in (1, 4, 5, 8, 9, 33):
        assert teacher.output_shapes(f)["ego/logits"][0] == (math.ceil(f / 4), 2)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_frames_give_zero_rows_and_real_frames_do_not(loaded, kind):
    out = next(iter(loaded[kind].predict(_frames(2, 8, 40, 40, seed=2), _times(2, 8, [8, 3])).values()))
    if kind == "ego":  # windows [0-3], [4-7]: the second clip's second window has no valid frame
        assert np.all(out[1, 1] == 0)
        assert np.abs(out[[0, 0, 1], [0, 1, 0]]).min() > 0
    elif kind == "object":
        assert np.all(out[1, 3:] == 0)
        assert (np.abs(out[0]).sum(-1) > 0).all() and (np.abs(out[1, :3]).sum(-1) > 0).all()
    else:
        assert np.all(out[1, 3:] == 0)
        assert out[0, :, 0, 4].min() > 0  # untrained, so every real frame has some scored box


def test_ego_pads_windows_by_repeating_the_last_valid_frame(loaded):
    teacher = loaded["ego"]
    frames = _frames(1, 6, 64, 64, seed=3)
    short = teacher.predict(frames, _times(1, 6, [6]))["ego/logits"]
    repeated = np.concatenate([frames, frames[:, [5, 5]]], axis=1)
    full = teacher.predict(repeated, _times(1, 8, [8]))["ego/logits"]
    np.testing.assert_allclose(short, full, atol=1e-5)
    # NaN frames inside the clip's last window are replaced the same way, whatever their pixels
    masked = teacher.predict(np.concatenate([frames, _frames(1, 2, 64, 64, 9)], 1), _times(1, 8, [6]))["ego/logits"]
    np.testing.assert_allclose(masked, full, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_resizes_frames_itself(loaded, kind):
    teacher = loaded[kind]
    frames = _frames(1, 4, teacher.spec.size, teacher.spec.size, seed=4)
    # 2x pixel repeats: INTER_AREA brings them back exactly to the frames above
    big = frames.repeat(2, axis=2).repeat(2, axis=3)
    times = _times(1, 4, [4])
    for key, value in teacher.predict(frames, times).items():
        np.testing.assert_allclose(teacher.predict(big, times)[key], value, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_depend_on_the_frames_and_not_on_batching(loaded, kind):
    teacher = loaded[kind]
    times = _times(2, 5, [5, 5])
    frames = _frames(2, 5, 64, 64, seed=5)
    a = next(iter(teacher.predict(frames, times).values()))
    b = next(iter(teacher.predict(_frames(2, 5, 64, 64, seed=6), times).values()))
    assert np.abs(a - b).max() > 1e-3
    small_batches = next(iter(teacher.predict(frames, times, max_batch=3).values()))
    np.testing.assert_allclose(small_batches, a, atol=1e-4)


def test_handobj_rows_are_well_formed(loaded):
    boxes = loaded["handobj"].predict(_frames(2, 6, 90, 120, seed=7), _times(2, 6, [6, 6]))["handobj/boxes"]
    rows = boxes.reshape(-1, 7)
    real = rows[:, 4] > 0
    assert real.any()
    assert np.all(rows[~real] == 0)  # score 0 marks padding, and padding rows are all zero
    assert rows[:, :4].min() >= 0 and rows[:, :4].max() <= 1
    assert np.all(rows[real, 2] >= rows[real, 0]) and np.all(rows[real, 3] >= rows[real, 1])
    assert set(np.unique(rows[real, 5])) <= {0.0, 1.0}
    assert set(np.unique(rows[real, 6])) <= set(range(len(handobj.CONTACT_STATES)))
    assert np.all(rows[real & (rows[:, 5] == 1), 6] == 0)  # objects have no contact state
    scores = boxes[..., 4]
    assert np.all(np.diff(scores, axis=-1) <= 0)  # best first


@pytest.mark.parametrize("kind", KINDS)
def test_predict_refuses_mismatched_batches(loaded, kind):
    with pytest.raises(ValueError, match="do not match"):
        loaded[kind].predict(_frames(2, 4, 32, 32, seed=0), _times(2, 5, [5, 5]))
    with pytest.raises(ValueError, match="uint8"):
        loaded[kind].predict(_frames(2, 4, 32, 32, seed=0).astype(np.float32), _times(2, 4, [4, 4]))


def test_pack_boxes_keeps_the_top_k_and_pads_with_zeros():
    few = {
        "boxes": np.array([[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.5, 0.6]], np.float32),
        "scores": np.array([0.9, 0.4], np.float32),
        "kinds": np.array([0, 1]),
        "contact": np.array([3, 0]),
    }
    many = {k: np.repeat(v, 6, axis=0) for k, v in few.items()}
    rows = handobj.pack_boxes([few, many], max_boxes=8)
    assert rows.shape == (2, 8, 7)
    np.testing.assert_allclose(rows[0, 1], [0.3, 0.3, 0.5, 0.6, 0.4, 1, 0])
    assert np.all(rows[0, 2:] == 0)
    assert np.all(rows[1, :, 4] > 0)  # 12 detections -> 8 rows, none padding


@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_roi_align_matmul_gives_torchvision_roi_align_numbers_and_gradients(sampling_ratio):
    torch.manual_seed(0)
    features = torch.randn(3, 4, 16, 16, requires_grad=True)
    boxes = [
        torch.tensor([[0.0, 0.0, 64.0, 64.0], [60.0, 2.0, 64.0, 9.0], [5.2, 7.7, 9.1, 15.3], [0.0, 50.0, 1.5, 64.0]]),
        torch.zeros((0, 4)),  # an image without boxes
        torch.tensor([
            [30.0, 30.0, 30.5, 30.5],  # under a pixel: widened to one
            [10.0, 12.0, 40.0, 20.0],
            [56.0, 40.0, 75.0, 70.0],  # past the right and bottom edges
            [-9.0, -6.0, 6.0, 10.0],  # past the top-left corner: samples beyond -1 px count as zero
        ]),
    ]
    want = roi_align(features, boxes, 5, 0.25, sampling_ratio)
    got = handobj.roi_align_matmul(features, boxes, 5, 0.25, sampling_ratio)
    torch.testing.assert_close(got, want)
    weights = torch.randn_like(want)
    (grad_want,) = torch.autograd.grad((want * weights).sum(), features)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), features)
    torch.testing.assert_close(grad_got, grad_want)


def test_detector_pools_rois_through_the_matmul_roi_align():
    model = handobj.build().eval()
    pool = model.detector.roi_heads.box_roi_pool
    assert isinstance(pool, handobj.MatmulRoIAlign)
    features = {"0": torch.randn(2, 64, 32, 32)}
    boxes = [torch.tensor([[4.0, 6.0, 12.0, 20.0]]), torch.tensor([[0.0, 0.0, 128.0, 128.0], [90.0, 60.0, 97.0, 69.0]])]
    want = MultiScaleRoIAlign(["0"], 5, pool.sampling_ratio)(features, boxes, [(128, 128)] * 2)
    torch.testing.assert_close(pool(features, boxes, [(128, 128)] * 2), want)


def test_tiny_fpn_backbone_is_torchvisions_fpn_finest_level_plus_the_scene_term():
    torch.manual_seed(0)
    net = handobj.TinyFPNBackbone(widths=(8, 16, 16, 32), out_channels=16, first_level=1).eval()
    fpn = FeaturePyramidNetwork([16, 16, 32], 16).eval()
    for inner, lateral in zip(fpn.inner_blocks, net.lateral):
        inner[0].load_state_dict(lateral.state_dict())
    fpn.layer_blocks[0][0].load_state_dict(net.smooth.state_dict())
    x = torch.randn(2, 3, 64, 48)  # 48 -> 24 -> 12 -> 6 -> 3: upsampling must hit odd sizes exactly
    levels, y = {}, x
    for i, stage in enumerate(net.stages):
        y = stage(y)
        if i >= net.first_level:
            levels[str(i)] = y
    finest = fpn(levels)["1"]
    with torch.no_grad():
        got = net(x)
        want = finest + net.scene(finest.mean((2, 3), keepdim=True))
    assert got.shape == (2, 16, 64 // 4, 48 // 4)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("arch", sorted(handobj.ARCHS))
def test_every_handobj_arch_builds_one_feature_map(arch):
    model = handobj.build(arch).eval()
    stride = {"fasterrcnn_tiny": 8, "fasterrcnn_tiny_fpn": 4}[arch]
    assert model.detector.backbone(torch.zeros(1, 3, 128, 128)).shape == (1, 64, 128 // stride, 128 // stride)
    with pytest.raises(ValueError, match="unknown hand-object architecture"):
        handobj.build("fasterrcnn_huge")


@pytest.mark.parametrize(
    "arch, arch_kwargs",
    [
        ("fasterrcnn_tiny", {}),  # the first demo detector: its weights files must still load
        ("fasterrcnn_tiny_fpn", {"backbone": {"widths": [8, 16, 16, 32], "out_channels": 32, "first_level": 0}}),
    ],
)
def test_handobj_weights_files_rebuild_their_arch_and_backbone(arch, arch_kwargs, tmp_path):
    torch.manual_seed(0)
    model = handobj.build(arch, **arch_kwargs).eval()
    path = save_teacher(tmp_path / "handobj.pt", model, "handobj", arch, arch_kwargs, handobj.make_meta())
    teacher = load_teacher(path)
    assert teacher.meta["arch"] == arch and teacher.meta["arch_kwargs"] == arch_kwargs
    torch.testing.assert_close(teacher.model.state_dict(), model.state_dict())
    frames, times = _frames(1, 3, 96, 96, seed=3), _times(1, 3, [3])
    want = handobj.HandObjectTeacher(model, handobj.make_meta()).predict(frames, times)["handobj/boxes"]
    assert (want[..., 4] > 0).any()  # an untrained detector still emits (low-score) boxes to compare
    np.testing.assert_array_equal(teacher.predict(frames, times)["handobj/boxes"], want)


# ---------------------------------------------------------------- weights files


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_predictions_and_provenance(weights_files, kind, tmp_path):
    build, arch, arch_kwargs, meta = _recipe(kind)
    torch.manual_seed(0)
    model = build(arch, **arch_kwargs)
    fresh = base.teacher_class(kind)(model, {**meta, "spec": meta["spec"]})
    path = weights_files[kind]
    teacher = load_teacher(path)

    frames, times = _frames(2, 5, 50, 70, seed=8), _times(2, 5, [5, 2])
    expected, got = fresh.predict(frames, times), teacher.predict(frames, times)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])

    assert teacher.meta["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert teacher.meta["name"] == teacher.name == kind
    assert teacher.meta["arch"] == arch and teacher.meta["source"] == str(path.resolve())
    assert teacher.spec == InputSpec.from_dict(meta["spec"])
    assert teacher.classes == list(meta["classes"])
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing


def test_meta_is_stored_as_plain_values(loaded):
    assert loaded["ego"].meta["train"]["accuracy"] == pytest.approx(0.5)
    assert type(loaded["ego"].meta["train"]["accuracy"]) is float


def test_save_teacher_requires_classes_and_spec(tmp_path):
    with pytest.raises(ValueError, match="spec"):
        save_teacher(tmp_path / "x.pt", ego.build(width=8), "ego", ego.DEFAULT_ARCH, {"width": 8}, {"classes": ["a"]})
    with pytest.raises(KeyError, match="unknown teacher kind"):
        save_teacher(tmp_path / "x.pt", ego.build(width=8), "nope", ego.DEFAULT_ARCH, {}, ego.make_meta())
    assert not list(tmp_path.iterdir())


def test_corrupt_or_foreign_weights_files_raise_teacher_weights_error(weights_files, tmp_path):
    good = weights_files["ego"].read_bytes()
    cases = {
        "garbage.pt": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not a torch weights file, or a damaged one"),
        "truncated.pt": (good[: len(good) // 2], "not a readable"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save(ego.build(width=8).state_dict(), tmp_path / "state_dict.pt")
    cases["state_dict.pt"] = (None, "not an egoexo teacher file")
    payload = torch.load(weights_files["ego"], weights_only=True)
    torch.save({**payload, "arch_kwargs": {"width": 16}}, tmp_path / "mismatch.pt")
    cases["mismatch.pt"] = (None, "weights do not fit ego")
    torch.save({**payload, "kind": "audio"}, tmp_path / "kind.pt")
    cases["kind.pt"] = (None, "unknown teacher kind 'audio'")

    for name, (_, reason) in cases.items():
        with pytest.raises(TeacherWeightsError, match=reason) as err:
            load_teacher(tmp_path / name)
        assert isinstance(err.value, ValueError)
        assert str(tmp_path / name) in str(err.value)


def test_a_non_finite_teacher_output_fails_only_its_row(weights_files, tmp_path):
    """NaN from a teacher, or a value past float16's range, fails that clip's row with the reason;
    its neighbours in the shard are written as usual."""
    from pipeline.io.store import FAILED, OK, create_store
    from pipeline.io.video import write_video
    from pipeline.stages.extract import NON_FINITE, ShardWorker

    videos = [write_video(tmp_path / f"v{i}.mp4", _frames(1, 8, 64, 64, i)[0], fps=4) for i in range(3)]
    teacher = load_teacher(weights_files["object"])
    F = 8
    shapes = teacher.output_shapes(F)
    create_store(tmp_path / "s.zarr", ["a", "b", "c"], F, shapes, {}, shard_rows=3)
    worker = ShardWorker({"object": str(weights_files["object"])}, str(tmp_path / "s.zarr"), "cpu", 1, 8)
    (name,) = shapes
    predict = worker.teachers["object"].predict

    def poisoned(frames, frame_time, **kwargs):
        out = predict(frames, frame_time, **kwargs)
        out[name][0, 0, 0] = np.nan  # the first clip of the batch: row 0
        out[name][2, 1, 1] = 1e6  # finite in float32, inf in the store's float16: row 2
        return out

    worker.teachers["object"].predict = poisoned
    worker.run_shard(0, 3, [(str(v), 0.0, 2.0, None) for v in videos])
    store = worker.store
    assert store.status().tolist() == [FAILED, OK, FAILED]
    assert store.errors().tolist() == [f"{NON_FINITE} ({name})", "", f"{NON_FINITE} ({name})"]
    row = store.read_row(1)[name]
    assert np.isfinite(row).all() and np.abs(row).sum() > 0


def _shard_worker(weights_files, tmp_path, clip_ids, F=8, kinds=("object", "ego", "handobj"), **kwargs):
    from pipeline.io.store import create_store
    from pipeline.stages.extract import ShardWorker

    shapes = {}
    for kind in kinds:
        shapes.update(load_teacher(weights_files[kind]).output_shapes(F))
    create_store(tmp_path / "s.zarr", clip_ids, F, shapes, {}, shard_rows=len(clip_ids))
    return ShardWorker({k: str(weights_files[k]) for k in kinds}, str(tmp_path / "s.zarr"), "cpu", 1, **kwargs)


def test_frames_are_decoded_with_their_aspect_and_clips_of_each_size_batched_apart(weights_files, tmp_path):
    """Landscape and portrait videos in one shard: each decoded at the teachers' short side with
    its aspect ratio, each row equal to what the teachers give for that clip alone."""
    from pipeline.io.store import OK
    from pipeline.io.video import write_video

    shapes = [(64, 96), (96, 64), (64, 96)]  # H, W
    videos = [write_video(tmp_path / f"v{i}.mp4", _frames(1, 8, h, w, i)[0], fps=4) for i, (h, w) in enumerate(shapes)]
    clips = [(str(v), 0.0, 2.0, None) for v in videos]
    worker = _shard_worker(weights_files, tmp_path, ["a", "b", "c"], batch_clips=3)
    assert worker.short_side == max(t.spec.size for t in worker.teachers.values()) == 128  # the demo teachers'
    frames, times = worker.decode(clips[1])
    assert frames.shape == (8, 96, 64, 3)  # portrait, and never upscaled: the video's own 64 px short side
    np.testing.assert_allclose(times, np.arange(8) / 4, atol=1e-6)
    result = worker.run_shard(0, 3, clips)
    assert result["ok"] == 3 and worker.store.status().tolist() == [OK] * 3
    for i, clip in enumerate(clips):
        frames, times = worker.decode(clip)
        for kind, teacher in worker.teachers.items():
            alone = teacher.predict(frames[None], times[None])
            for name, value in alone.items():
                np.testing.assert_allclose(worker.store.read_row(i)[name], value[0].astype(np.float16), atol=2e-3,
                                           err_msg=f"row {i} {name}")


def test_a_teacher_exception_fails_the_rows_with_its_reason_and_the_shard_is_written(weights_files, tmp_path):
    from pipeline.io.store import FAILED
    from pipeline.io.video import write_video
    from pipeline.stages.extract import MISSING, TEACHER_ERROR

    videos = [write_video(tmp_path / f"v{i}.mp4", _frames(1, 8, 64, 64, i)[0], fps=4) for i in range(2)]
    worker = _shard_worker(weights_files, tmp_path, ["a", "b", "c"], kinds=("object",))

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text")

    worker.teachers["object"].predict = broken
    result = worker.run_shard(0, 3, [(str(videos[0]), 0.0, 2.0, None), (None, 0.0, 2.0, None),
                                     (str(videos[1]), 0.0, 2.0, None)])
    assert result["ok"] == 0
    reason = f"{TEACHER_ERROR}: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert worker.store.status().tolist() == [FAILED] * 3
    assert worker.store.errors().tolist() == [reason, MISSING, reason]


def test_only_the_rows_asked_for_are_recomputed_the_others_kept(weights_files, tmp_path):
    """A rerun's retry: rows 0 and 2 computed again, row 1 left exactly as the store holds it."""
    from pipeline.io.store import FAILED, OK
    from pipeline.io.video import write_video

    videos = [write_video(tmp_path / f"v{i}.mp4", _frames(1, 8, 64, 64, i)[0], fps=4) for i in range(3)]
    clips = [(str(v), 0.0, 2.0, None) for v in videos]
    worker = _shard_worker(weights_files, tmp_path, ["a", "b", "c"], kinds=("object",))
    worker.run_shard(0, 3, [(None, 0.0, 2.0, None), clips[1], (str(tmp_path / "gone.mp4"), 0.0, 2.0, None)])
    assert worker.store.status().tolist() == [FAILED, OK, FAILED]
    kept = worker.store.read_row(1)
    worker.store.array("object/logits")[1] = 0.5  # a marker: row 1 must not be recomputed
    result = worker.run_shard(0, 3, clips, rows=[0, 2])
    assert result["rows"] == 2 and worker.store.status().tolist() == [OK, OK, OK]
    assert worker.store.errors().tolist() == ["", "", ""]
    np.testing.assert_array_equal(worker.store.read_row(1)["object/logits"], 0.5)
    np.testing.assert_array_equal(worker.store.read_row(1)["frame_time"], kept["frame_time"])
    (tmp_path / "fresh").mkdir()
    fresh = _shard_worker(weights_files, tmp_path / "fresh", ["a", "b", "c"], kinds=("object",))
    fresh.run_shard(0, 3, clips)  # the same clips in one pass
    for i in (0, 2):
        np.testing.assert_array_equal(worker.store.read_row(i)["object/logits"], fresh.store.read_row(i)["object/logits"])


def test_decoding_runs_ahead_of_the_teachers_but_no_further_than_decode_ahead(weights_files, tmp_path):
    """Backpressure: with decode_ahead 2, no clip is decoded more than 2 clips before the
    teachers take it, and the results come back in row order."""
    import threading

    from pipeline.io.video import write_video

    videos = [write_video(tmp_path / f"v{i}.mp4", _frames(1, 8, 64, 64, i)[0], fps=4) for i in range(6)]
    worker = _shard_worker(weights_files, tmp_path, list("abcdef"), kinds=("object",), batch_clips=1,
                           decode_threads=2, decode_ahead=2)
    decode, lock, started, consumed, worst = worker.decode, threading.Lock(), [], [], [0]

    def counted(clip):
        with lock:
            started.append(clip[0])
            worst[0] = max(worst[0], len(started) - len(consumed))
        return decode(clip)

    worker.decode = counted
    order = []
    for i, got in worker._decoded([(str(v), 0.0, 2.0, None) for v in videos], list(range(6))):
        consumed.append(i)
        order.append(i)
        assert got[0].shape[0] == 8
    assert order == list(range(6)) and worst[0] <= 2 + 1  # at most decode_ahead waiting, plus the one just handed over
