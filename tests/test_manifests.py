"""Kinetics and Charades-Ego manifest parsers, on fixture CSVs with the real headers."""
from pathlib import Path

import pytest

from data_manifests.charades_ego import read_charades_classes, read_charades_ego_csv
from data_manifests.kinetics import read_kinetics_csv, resolve_kinetics_path
from data_manifests.table import ManifestError, file_sha256

KINETICS_VAL = """\
label,youtube_id,time_start,time_end,split,is_cc
abseiling,-3B32lodo2M,59,69,val,0
"air drumming",_dbcJuKJQNs,40,50,val,1
abseiling,zzzzzzzzzzz,0.0,10.0,val,0
"""

CHARADES_HEADER = (
    "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length,egocentric,charades_video\n"
)
CHARADES_ROWS = (
    "005BU,HR43,Kitchen,6,7,Yes,A person opens a box.,box;table,\"A person walks in, opens a box.\","
    "c004 0.00 5.10;c001 3.20 9.00;c004 7.00 8.00,31.25,No,\n"
    "005BUEGO,HR43,Kitchen,6,7,Yes,A person opens a box.,box;table,\"Line one,\nline two.\","
    "c004 0.50 5.60;c001 3.70 9.50,30.50,Yes,46GP8\n"
    "00HFP,KL12,Bedroom,5,5,Yes,Nothing happens.,,,,12.0,No,\n"
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- Kinetics


def test_kinetics_rows_field_by_field(tmp_path):
    path = write(tmp_path, "val.csv", KINETICS_VAL)
    table = read_kinetics_csv(path)

    assert table.classes == ["abseiling", "air drumming"]
    assert (table.format, table.multilabel) == ("kinetics", False)
    assert table.source == str(path) and table.source_sha256 == file_sha256(path)
    assert [c.clip_id for c in table] == [
        "-3B32lodo2M_000059_000069",
        "_dbcJuKJQNs_000040_000050",
        "zzzzzzzzzzz_000000_000010",
    ]
    first, second, third = table
    assert first.path == "-3B32lodo2M_000059_000069.mp4"
    assert (first.start, first.end, first.duration) == (0.0, 10.0, 10.0)
    assert first.labels == (0,) and second.labels == (1,) and third.labels == (0,)
    assert {c.split for c in table} == {"val"}
    assert first.extras == {"label_name": "abseiling", "youtube_id": "-3B32lodo2M", "time_start": 59, "time_end": 69, "is_cc": 0}
    assert second.extras["label_name"] == "air drumming" and second.extras["is_cc"] == 1


def test_kinetics_given_classes_fix_the_label_order(tmp_path):
    path = write(tmp_path, "val.csv", KINETICS_VAL)
    table = read_kinetics_csv(path, classes=["air drumming", "zumba", "abseiling"])
    assert [c.labels for c in table] == [(2,), (0,), (2,)]
    assert table.classes == ["air drumming", "zumba", "abseiling"]


def test_kinetics_test_csv_without_label(tmp_path):
    path = write(tmp_path, "test.csv", "youtube_id,time_start,time_end,split\n---QUuC4vJs,84,94,test\n")
    (clip,) = read_kinetics_csv(path, classes=["abseiling"])
    assert clip.clip_id == "---QUuC4vJs_000084_000094"
    assert clip.labels == () and clip.extras["label_name"] is None and clip.split == "test"


@pytest.mark.parametrize(
    "row, message",
    [
        ("abseiling,abc,ten,20,train", "time_start"),
        ("abseiling,abc,10,10,train", "not after"),
        ("abseiling,abc,10.5,20,train", "whole number"),
        ("abseiling,,10,20,train", "youtube_id"),
        ("abseiling,abc,10,20", "expected 5 fields"),
        ("zumba,abc,10,20,train", "zumba"),
    ],
)
def test_kinetics_malformed_row_names_its_line(tmp_path, row, message):
    text = "label,youtube_id,time_start,time_end,split\nabseiling,ok_id,0,10,train\n" + row + "\n"
    path = write(tmp_path, "train.csv", text)
    with pytest.raises(ManifestError, match=rf"train\.csv:3: .*{message}"):
        read_kinetics_csv(path, classes=["abseiling"])


def test_kinetics_missing_column_and_empty_file(tmp_path):
    with pytest.raises(ManifestError, match=r":1: header lacks column\(s\) time_end"):
        read_kinetics_csv(write(tmp_path, "a.csv", "label,youtube_id,time_start,split\n"))
    with pytest.raises(ManifestError, match=r":1: empty file"):
        read_kinetics_csv(write(tmp_path, "b.csv", ""))
    assert issubclass(ManifestError, ValueError)


def test_resolve_kinetics_path_layouts(tmp_path):
    path = write(tmp_path, "val.csv", KINETICS_VAL)
    first, second, third = read_kinetics_csv(path)
    root = tmp_path / "videos"
    (root / "val" / "air_drumming").mkdir(parents=True)
    flat = root / f"{first.clip_id}.mp4"
    flat.touch()
    nested = root / "val" / "air_drumming" / f"{second.clip_id}.webm"
    nested.touch()

    assert resolve_kinetics_path(root, first) == flat
    assert resolve_kinetics_path(root, second) == nested
    assert resolve_kinetics_path(root, third) is None
    (root / "val" / f"{third.clip_id}.mkv").touch()
    assert resolve_kinetics_path(root, third) == root / "val" / f"{third.clip_id}.mkv"


@pytest.mark.parametrize("layout", [
    "{id}.avi",  # any video extension, not only mp4/webm/mkv
    "{id}.MP4",  # in any case
    "air drumming/{id}.mp4",  # the ActivityNet crawler: <root>/<label>/<file>
    "videos_val/air_drumming/{id}.mp4",  # mmaction2: videos_val/<label_with_underscores>/<file>
    "validate/{id}.mkv",
])
def test_kinetics_index_finds_clips_by_stem_in_common_layouts(tmp_path, layout):
    first, second, _ = read_kinetics_csv(write(tmp_path, "val.csv", KINETICS_VAL))
    root = tmp_path / "videos"
    want = root / layout.format(id=second.clip_id)
    want.parent.mkdir(parents=True)
    want.touch()
    (root / f"{second.clip_id}.txt").touch()  # not a video
    assert resolve_kinetics_path(root, second) == want
    assert resolve_kinetics_path(root, first) is None


def test_kinetics_700_validate_rows_find_the_cvdf_val_folder(tmp_path):
    rows = "label,youtube_id,time_start,time_end,split\nabseiling,-3B32lodo2M,59,69,validate\n"
    (clip,) = read_kinetics_csv(write(tmp_path, "validate.csv", rows))
    want = tmp_path / "k700" / "val" / "abseiling" / f"{clip.clip_id}.mp4"
    want.parent.mkdir(parents=True)
    want.touch()
    assert resolve_kinetics_path(tmp_path / "k700", clip) == want


def test_a_stem_in_several_folders_resolves_to_its_split_and_label(tmp_path):
    _, second, _ = read_kinetics_csv(write(tmp_path, "val.csv", KINETICS_VAL))
    root = tmp_path / "videos"
    for folder in ("a_train_copy", "val/air_drumming", "train/air_drumming"):
        (root / folder).mkdir(parents=True)
        (root / folder / f"{second.clip_id}.mp4").touch()
    assert resolve_kinetics_path(root, second) == root / "val" / "air_drumming" / f"{second.clip_id}.mp4"


def test_resolving_many_clips_lists_each_folder_once(tmp_path, monkeypatch):
    import os

    from data_manifests.formats import resolve_videos

    labels = [f"class {i}" for i in range(6)]
    lines = ["label,youtube_id,time_start,time_end,split"]
    root = tmp_path / "videos"
    for i in range(60):
        label = labels[i % 6]
        lines.append(f"{label},vid{i:08d}ab,{i},{i + 10},train")
        if i % 10:  # every tenth clip is missing
            (root / "train" / label).mkdir(parents=True, exist_ok=True)
            (root / "train" / label / f"vid{i:08d}ab_{i:06d}_{i + 10:06d}.mp4").touch()
    table = read_kinetics_csv(write(tmp_path, "train.csv", "\n".join(lines) + "\n"))
    listed, stats = [], []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: listed.append(p) or real_scandir(p))
    monkeypatch.setattr(Path, "is_file", lambda self: stats.append(self) or False)
    found = resolve_videos(table, list(table), root)
    assert [p is not None for p in found] == [bool(i % 10) for i in range(60)]
    assert found[1] == root / "train" / "class 1" / "vid00000001ab_000001_000011.mp4"
    assert len(listed) == 1 + 1 + 6 and stats == []  # root, train/, the 6 label folders; no per-clip stat


def test_the_kinetics_index_costs_a_few_hundred_bytes_per_file(tmp_path):
    import tracemalloc

    from data_manifests.kinetics import KineticsIndex

    root = tmp_path / "videos"
    root.mkdir()
    n = 5000
    for i in range(n):
        (root / f"rep{i:08d}_000000_000010.mp4").touch()
    tracemalloc.start()
    try:
        index = KineticsIndex(root)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index.by_stem) == n and index.folders_listed == 1
    # Path strings, the folder read as listed: 331 B a file here; Path objects from a list of the
    # folder's entries took 775 (a 240,000-clip Kinetics root: 80 against 190 MB in the driver).
    assert peak / n < 500, f"{peak / n:.0f} B per file"


# ----------------------------------------------------------------------------- Charades-Ego


def test_charades_ego_rows_field_by_field(tmp_path):
    path = write(tmp_path, "CharadesEgo_v1_train.csv", CHARADES_HEADER + CHARADES_ROWS)
    table = read_charades_ego_csv(path)

    assert table.classes == ["c000", "c001", "c002", "c003", "c004"]  # c000 .. the largest id
    assert (table.format, table.multilabel) == ("charades_ego", True)
    assert table.source_sha256 == file_sha256(path)
    third, ego, empty = table
    assert [c.clip_id for c in table] == ["005BU", "005BUEGO", "00HFP"]
    assert [c.path for c in table] == ["005BU.mp4", "005BUEGO.mp4", "00HFP.mp4"]
    assert [(c.start, c.end) for c in table] == [(0.0, 31.25), (0.0, 30.5), (0.0, 12.0)]
    assert [c.labels for c in table] == [(1, 4), (1, 4), ()]
    assert {c.split for c in table} == {"train"}
    assert [c.extras["ego"] for c in table] == [False, True, False]
    assert third.extras["actions"] == [(4, 0.0, 5.1), (1, 3.2, 9.0), (4, 7.0, 8.0)]
    assert ego.extras["actions"] == [(4, 0.5, 5.6), (1, 3.7, 9.5)]
    assert empty.extras["actions"] == []
    assert third.extras["pair"] == ego.extras["pair"] == "005BU"
    assert ego.extras["charades_video"] == "46GP8" and third.extras["charades_video"] is None
    assert ego.extras["scene"] == "Kitchen"
    assert table.label_matrix().sum(axis=1).tolist() == [2.0, 2.0, 0.0]


def test_charades_classes_file_and_given_classes(tmp_path):
    classes_txt = write(tmp_path, "Charades_v1_classes.txt", "".join(f"c{i:03d} Class number {i}\n" for i in range(157)))
    classes = read_charades_classes(classes_txt)
    assert len(classes) == 157 and classes[0] == ("c000", "Class number 0") and classes[156][0] == "c156"

    path = write(tmp_path, "CharadesEgo_v1_test.csv", CHARADES_HEADER + CHARADES_ROWS)
    table = read_charades_ego_csv(path, classes=[cid for cid, _ in classes])
    assert len(table.classes) == 157
    assert {c.split for c in table} == {"test"}  # from the file name
    assert read_charades_ego_csv(path, split="val")[0].split == "val"


def test_charades_ego_flag_falls_back_to_id_suffix(tmp_path):
    text = CHARADES_HEADER + "AB12C,S,K,6,6,Yes,s,o,d,c001 0 1,5,,\nAB12CEGO,S,K,6,6,Yes,s,o,d,c001 0 1,5,,\n"
    table = read_charades_ego_csv(write(tmp_path, "x.csv", text))
    assert [c.extras["ego"] for c in table] == [False, True]


@pytest.mark.parametrize(
    "actions, egocentric, message",
    [
        ("c01 1.0 2.0", "No", "is not 'cNNN start end'"),
        ("c001 1.0", "No", "is not 'cNNN start end'"),
        ("c001 a 2.0", "No", "is not 'cNNN start end'"),
        ("c009 1.0 2.0", "No", "c009 not in the class list"),
        ("c001 1.0 2.0", "Maybe", "egocentric 'Maybe'"),
    ],
)
def test_charades_malformed_row_names_its_line(tmp_path, actions, egocentric, message):
    # Header, then rows on lines 2, 3-4 (a quoted description spans two lines) and 5: the bad row is line 6.
    bad = f"BAD01,S,K,6,6,Yes,s,o,d,{actions},10.0,{egocentric},\n"
    path = write(tmp_path, "CharadesEgo_v1_train.csv", CHARADES_HEADER + CHARADES_ROWS + bad)
    with pytest.raises(ManifestError, match=rf"CharadesEgo_v1_train\.csv:6: .*{message}"):
        read_charades_ego_csv(path, classes=[f"c{i:03d}" for i in range(5)])


def test_charades_bad_length_and_bad_classes_line(tmp_path):
    path = write(tmp_path, "c.csv", CHARADES_HEADER + "AB12C,S,K,6,6,Yes,s,o,d,,long,No,\n")
    with pytest.raises(ManifestError, match=r"c\.csv:2: length 'long'"):
        read_charades_ego_csv(path)
    classes_txt = write(tmp_path, "classes.txt", "c000 Holding some clothes\n\nHolding a cup\n")
    with pytest.raises(ManifestError, match=r"classes\.txt:3: expected 'cNNN class name'"):
        read_charades_classes(classes_txt)
