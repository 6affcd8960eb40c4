"""The demo world generator: counts, manifests, decodable videos, ground truth that matches the pixels."""
import json
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pytest

from data_manifests.charades_ego import read_charades_classes, read_charades_ego_csv
from data_manifests.demo_world import (
    ACTIVITIES,
    FPS,
    HEIGHT,
    OBJECT_CATEGORIES,
    WIDTH,
    demo_video_specs,
    make_demo,
    render_clip,
)
from data_manifests.kinetics import read_kinetics_csv, resolve_kinetics_path

SCALE = 0.05  # 3 train + 1 val clips per class, 3 train + 2 test script pairs


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = make_demo(out, seed=0, scale=SCALE, workers=2)
    return out, summary


@pytest.fixture(scope="session")
def gts(demo):
    out, _ = demo
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "ground_truth").glob("*.json"))}


@pytest.fixture(scope="session")
def decoded(demo, gts):
    """stem -> (frame times, [n, H, W, 3] RGB frames) for every video."""
    out, _ = demo
    return {stem: decode(out / gt["video"]) for stem, gt in gts.items()}


def decode(path: Path):
    with av.open(str(path)) as container:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    return [t for t, _ in frames], np.stack([a for _, a in frames])


def tree_bytes(root: Path) -> dict[str, bytes]:
    files = [root / "kinetics" / "kinetics_demo.csv", root / "demo_world.json", *sorted((root / "charades_ego").glob("*.csv"))]
    files += sorted((root / "ground_truth").glob("*.json"))
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_counts(demo, gts):
    out, summary = demo
    assert summary["kinetics"] == {"train": 24, "val": 8}
    assert summary["charades_ego_pairs"] == {"train": 3, "test": 2}
    assert summary["charades_ego_videos"] == 10
    assert summary["kinetics_closeups"] == 6  # 20 % of 32
    assert len(list((out / "kinetics" / "videos").glob("*.mp4"))) == 32
    assert len(list((out / "charades_ego" / "videos").glob("*.mp4"))) == 10
    assert len(gts) == 42 and (out / "ground_truth" / "README.md").is_file()
    assert summary["frames"] == 32 * 30 + 10 * 60 == sum(g["num_frames"] for g in gts.values())
    world = json.loads((out / "demo_world.json").read_text())
    assert [a["id"] for a in world["actions"]] == [f"c{i:03d}" for i in range(8)]
    assert [a["name"] for a in world["actions"]] == list(ACTIVITIES)
    assert world["object_categories"] == list(OBJECT_CATEGORIES)
    assert world["seed"] == 0 and world["counts"]["kinetics_closeups"] == 6
    assert sum(g["closeup"] for g in gts.values()) == 6


def test_kinetics_csv_parses(demo, gts):
    out, _ = demo
    table = read_kinetics_csv(out / "kinetics" / "kinetics_demo.csv")
    assert table.classes == sorted(ACTIVITIES)
    assert len(table) == 32 and {c.split for c in table} == {"train", "val"}
    for split, per_class in (("train", 3), ("val", 1)):
        assert sorted(c.extras["label_name"] for c in table.select(split)) == sorted(ACTIVITIES * per_class)
    for clip in table:
        yid, start, end = clip.extras["youtube_id"], clip.extras["time_start"], clip.extras["time_end"]
        assert len(yid) == 11 and end - start == 2 and clip.end == 2.0
        assert resolve_kinetics_path(out / "kinetics" / "videos", clip) is not None
        gt = gts[clip.clip_id]
        assert gt["actions"] == [[clip.extras["label_name"], 0.0, 2.0]]
        assert not gt["ego"]


def test_charades_csvs_parse_and_pair(demo, gts):
    out, _ = demo
    classes = read_charades_classes(out / "charades_ego" / "Charades_v1_classes.txt")
    assert [name for _, name in classes] == list(ACTIVITIES)
    ids = [cid for cid, _ in classes]
    train = read_charades_ego_csv(out / "charades_ego" / "CharadesEgo_v1_train.csv", classes=ids)
    test = read_charades_ego_csv(out / "charades_ego" / "CharadesEgo_v1_test.csv", classes=ids)
    assert (len(train), len(test)) == (6, 4)
    assert {c.split for c in train} == {"train"} and {c.split for c in test} == {"test"}
    assert not {c.extras["pair"] for c in train} & {c.extras["pair"] for c in test}

    pairs = defaultdict(list)
    for clip in [*train, *test]:
        gt = gts[clip.clip_id]
        assert clip.extras["ego"] == clip.clip_id.endswith("EGO") == gt["ego"]
        assert (out / "charades_ego" / "videos" / clip.path).is_file()
        assert len(clip.labels) == 2 and clip.end == 4.0  # two different activities, 4 s
        assert [[ACTIVITIES[i], s, e] for i, s, e in clip.extras["actions"]] == gt["actions"]
        assert clip.extras["actions"][0][1:] == (0.0, 2.0) and clip.extras["actions"][1][1:] == (2.0, 4.0)
        pairs[clip.extras["pair"]].append(clip)
    for pair in pairs.values():
        exo, ego = sorted(pair, key=lambda c: c.extras["ego"])
        assert (exo.extras["ego"], ego.extras["ego"]) == (False, True)
        assert ego.clip_id == exo.clip_id + "EGO"
        assert exo.extras["actions"] == ego.extras["actions"]
        assert gts[exo.clip_id]["main_object"] == gts[ego.clip_id]["main_object"]


def test_every_video_decodes_to_its_ground_truth_frames(gts, decoded):
    for stem, gt in gts.items():
        times, frames = decoded[stem]
        assert frames.shape == (gt["num_frames"], HEIGHT, WIDTH, 3), stem
        assert (gt["width"], gt["height"], gt["fps"]) == (WIDTH, HEIGHT, FPS)
        assert np.allclose(times, np.arange(gt["num_frames"]) / FPS, atol=1e-6), stem
        assert [f["t"] for f in gt["frames"]] == pytest.approx(list(np.arange(gt["num_frames"]) / FPS))


def test_ground_truth_boxes_and_contacts(gts):
    contact_frames = 0
    for stem, gt in gts.items():
        assert gt["main_object"] in OBJECT_CATEGORIES
        for frame in gt["frames"]:
            for item in frame["hands"] + frame["objects"]:
                x1, y1, x2, y2 = item["box"]
                assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0, stem
            for obj in frame["objects"]:
                assert obj["category"] in OBJECT_CATEGORIES
            assert len({h["side"] for h in frame["hands"]}) == len(frame["hands"]) <= 2
            for hand in frame["hands"]:
                assert hand["side"] in ("left", "right") and hand["contact"] in (0, 3)
                if hand["contact"] == 0:
                    assert hand["object"] is None
                elif hand["object"] is not None:
                    assert frame["objects"][hand["object"]]["in_contact"]
                contact_frames += hand["contact"] == 3
        if gt["actions"][0][0] in ("wave", "walk", "clap") and len(gt["actions"]) == 1:
            assert all(h["contact"] == 0 for f in gt["frames"] for h in f["hands"]), stem
        if gt["actions"][0][0] in ("pick up", "put down", "push", "pour", "open"):
            assert any(h["contact"] == 3 for f in gt["frames"] for h in f["hands"]), stem
    assert contact_frames > 0


def test_views_change_hand_size(gts):
    """Close-ups and the head-mounted view show much bigger hands than the plain third-person view."""

    def mean_hand_area(keep):
        areas = [
            (h["box"][2] - h["box"][0]) * (h["box"][3] - h["box"][1])
            for g in gts.values() if keep(g) for f in g["frames"] for h in f["hands"]
        ]
        return float(np.mean(areas))

    plain = mean_hand_area(lambda g: not g["ego"] and g["video"].startswith("charades_ego/"))
    assert mean_hand_area(lambda g: g["closeup"]) > 3 * plain
    assert mean_hand_area(lambda g: g["ego"]) > 3 * plain
    # Kinetics-like clips are framed on the person: zoom 1.4-1.8, so hands 2-3.2x the area
    framed = mean_hand_area(lambda g: not g["closeup"] and g["video"].startswith("kinetics/"))
    assert 1.6 < framed / plain < 4.0


def test_hands_are_drawn_where_ground_truth_says(gts, decoded):
    checked = differs = 0
    for stem, gt in gts.items():
        _, frames = decoded[stem]
        for i in (0, gt["num_frames"] // 2, gt["num_frames"] - 1):
            frame = frames[i].astype(np.float32)
            for hand in gt["frames"][i]["hands"]:
                x1, y1, x2, y2 = hand["box"]
                # the central half of the box is mostly palm
                cx, cy, w, h = (x1 + x2) / 2 * WIDTH, (y1 + y2) / 2 * HEIGHT, (x2 - x1) * WIDTH, (y2 - y1) * HEIGHT
                inner = frame[int(cy - h / 4) : int(cy + h / 4) + 1, int(cx - w / 4) : int(cx + w / 4) + 1]
                checked += 1
                differs += np.abs(inner.mean((0, 1)) - frame.mean((0, 1))).sum() > 20
    assert checked > 100 and differs / checked > 0.9


def test_decoded_frames_match_the_drawing(gts, decoded):
    specs = demo_video_specs(seed=0, scale=SCALE)
    assert len(specs) == len(gts)
    for spec in (specs[0], specs[-1]):  # a Kinetics-like clip and an ego video
        drawn, gt = render_clip(spec)
        assert json.loads(json.dumps(gt)) == gts[spec.stem]
        assert np.abs(decoded[spec.stem][1].astype(np.int16) - drawn).mean() < 6


def test_same_seed_same_world_other_seed_other_world(demo, gts, decoded, tmp_path):
    out, _ = demo
    again = tmp_path / "again"
    make_demo(again, seed=0, scale=SCALE, workers=1)  # a different worker count must not matter
    assert tree_bytes(again) == tree_bytes(out)
    for stem, gt in gts.items():
        assert np.array_equal(decode(again / gt["video"])[1], decoded[stem][1]), stem

    other = tmp_path / "other"
    make_demo(other, seed=1, scale=0.01, workers=1)
    ours, theirs = tree_bytes(out), tree_bytes(other)
    shared = set(ours) & set(theirs)  # the fixed file names; every video id differs
    assert shared == {"kinetics/kinetics_demo.csv", "demo_world.json",
                      "charades_ego/CharadesEgo_v1_train.csv", "charades_ego/CharadesEgo_v1_test.csv"}
    assert all(ours[name] != theirs[name] for name in shared)


def test_refuses_to_mix_two_worlds_in_one_directory(demo):
    out, _ = demo
    assert not (out / ".demo_world.partial.json").exists()  # removed once complete
    with pytest.raises(FileExistsError, match="seed 0, scale 0.05"):
        make_demo(out, seed=1, scale=SCALE)
