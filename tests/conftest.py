import os

import pytest

os.environ.setdefault("PIPELINE_NO_PROGRESS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see pipeline/__init__.py


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A small synthetic world shared by the end-to-end tests (a few seconds to write)."""
    from data_manifests.demo_world import make_demo

    out = tmp_path_factory.mktemp("world")
    make_demo(out, seed=3, scale=0.12)
    return out


# A signals store written by hand over real videos: 7 clips of 3 classes, ego logits chosen so each
# clip's Ego-Score is 0.75 or 0.25 (wash hands 0.75, cut bread 0.5, walk dog 0.25), one hand and
# one object box per frame, and one failed row that must not count.
FABRICATED_CLASSES = ["cut bread", "wash hands", "walk dog"]
FABRICATED_ROWS = [  # (label, Ego-Score, seconds of video, status)
    ("wash hands", 0.75, 2.0, 1), ("wash hands", 0.75, 1.0, 1), ("cut bread", 0.75, 2.0, 1),
    ("cut bread", 0.25, 2.0, 1), ("walk dog", 0.25, 2.0, 1), ("walk dog", 0.25, 2.0, 1), ("walk dog", 0.99, 2.0, 2),
]
HAND_BOX = [0.25, 0.5, 0.5, 0.75, 0.9, 0, 3]  # x1, y1, x2, y2, score, kind (hand), contact (portable object)
OBJECT_BOX = [0.5, 0.5, 0.7, 0.7, 0.8, 1, 0]


@pytest.fixture
def fabricated_store(tmp_path):
    """{"store", "manifest", "video_root", "clip_ids"} of the store described above (4 fps, ego windows of 4 frames)."""
    import numpy as np

    from pipeline.io.store import create_store
    from pipeline.io.video import write_video

    videos = tmp_path / "videos"
    frames, windows = 8, 2
    lines, ids = ["path,label"], []
    ft = np.full((len(FABRICATED_ROWS), frames), np.nan, np.float32)
    ego = np.zeros((len(FABRICATED_ROWS), windows, 2), np.float32)
    for i, (label, score, seconds, _) in enumerate(FABRICATED_ROWS):
        write_video(videos / f"clip{i}.mp4", np.full((int(15 * seconds), 120, 160, 3), 100, np.uint8), fps=15)
        lines.append(f"clip{i}.mp4,{label}")
        ids.append(f"clip{i}")
        n = int(4 * seconds)
        ft[i, :n] = np.arange(n) / 4
        ego[i, : -(-n // 4), 1] = np.log(score / (1 - score))  # P(ego) = sigmoid(ego - exo); padding windows stay 0
    manifest = tmp_path / "clips.csv"
    manifest.write_text("\n".join(lines) + "\n")
    obj = np.zeros((len(ids), frames, 3), np.float32)
    obj[..., 2] = 2.0  # "knife" is every frame's top object
    boxes = np.zeros((len(ids), frames, 2, 7), np.float32)
    boxes[:, :, 0], boxes[:, :, 1] = HAND_BOX, OBJECT_BOX
    store = create_store(tmp_path / "signals.zarr", ids, frames, {
        "ego/logits": ((windows, 2), "float16"), "object/logits": ((frames, 3), "float16"),
        "handobj/boxes": ((frames, 2, 7), "float16")}, {
        "manifest": {"path": str(manifest), "format": "generic"}, "classes": FABRICATED_CLASSES,
        "video_root": str(videos), "frame_rate": 4.0, "num_frames": frames,
        "teachers": {"ego": {"spec": {"num_frames": 4}}, "object": {"classes": ["cup", "bread", "knife"]}},
    }, shard_rows=len(ids))
    status = np.array([s for *_, s in FABRICATED_ROWS], np.uint8)
    store.write_shard(0, len(ids), {"frame_time": ft, "ego/logits": ego, "object/logits": obj, "handobj/boxes": boxes},
                      status, ["" if s == 1 else "unreadable" for s in status])
    return {"store": tmp_path / "signals.zarr", "manifest": manifest, "video_root": videos, "clip_ids": ids}
