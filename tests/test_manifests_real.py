"""Real dataset layouts: EPIC-100, generic and PySlowFast lists, shipped class lists, format detection,
video resolution and the row-by-row manifest check — on fixture files with the real headers."""
import pytest

from data_manifests.charades_ego import read_charades_ego_csv, scan_charades_ego_csv
from data_manifests.check import check_manifest
from data_manifests.classes import charades_classes, epic100_nouns, epic100_verbs, kinetics400_classes
from data_manifests.epic_kitchens import parse_timestamp, read_epic100_csv, read_epic_video_info
from data_manifests.formats import clip_frame_rate, detect_format, load_manifest, resolve_video
from data_manifests.generic import read_generic_csv, read_pyslowfast_list
from data_manifests.kinetics import read_kinetics_csv, scan_kinetics_csv
from data_manifests.table import ManifestError

# Rows copied from EPIC_100_validation.csv / EPIC_100_test_timestamps.csv (epic-kitchens-100-annotations).
EPIC_HEADER = (
    "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
    "start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n"
)
EPIC_ROWS = (
    "P01_11_0,P01,P01_11,00:00:00.560,00:00:00.00,00:00:01.89,1,113,take plate,take,0,plate,2,['plate'],[2]\n"
    "P01_11_12,P01,P01_11,00:00:52.620,00:00:51.98,00:00:53.03,3118,3181,throw paper into bin,throw-into,13,"
    "paper,49,\"['paper', 'bin']\",\"[49, 36]\"\n"
    "P01_14_173,P01,P01_14,00:09:57.330,00:10:00.35,00:10:15.25,36021,36915,pour water into saucepan,pour-into,9,"
    "water,27,\"['water', 'saucepan']\",\"[27, 5]\"\n"
)
EPIC_TEST = (
    "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,stop_frame\n"
    "P01_101_0,P01,P01_101,00:00:02.851,00:00:02.86,00:00:03.87,143,193\n"
)
EPIC_VIDEO_INFO = (
    "video_id,duration,fps,resolution\n"
    "P01_11,561.527633,59.9400599400599,1920x1080\n"
    "P01_14,1352.585217,59.9400599400599,1920x1080\n"
    "P01_101,1831.46,50.0,1920x1080\n"
)
KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- shipped class lists


def test_shipped_class_lists():
    kinetics = kinetics400_classes()
    assert len(kinetics) == len(set(kinetics)) == 400
    assert kinetics[0] == "abseiling" and kinetics[-1] == "zumba" and kinetics == sorted(kinetics)
    assert "skiing (not slalom or crosscountry)" in kinetics  # as the DeepMind CSVs write it

    charades = charades_classes()
    assert len(charades) == 157 and [cid for cid, _ in charades] == [f"c{i:03d}" for i in range(157)]
    assert charades[0] == ("c000", "Holding some clothes") and charades[156] == ("c156", "Someone is eating something")

    verbs, nouns = epic100_verbs(), epic100_nouns()
    assert (len(verbs), len(nouns)) == (97, 300)
    assert verbs[:3] == ["take", "put", "wash"] and verbs[96] == "unfreeze"
    assert nouns[:2] == ["tap", "spoon"] and nouns[299] == "extract:vanilla"
    kinetics.append("x")  # callers get their own copy
    assert len(kinetics400_classes()) == 400


# ----------------------------------------------------------------------------- EPIC-Kitchens-100


def test_epic100_rows_field_by_field(tmp_path):
    path = write(tmp_path / "EPIC_100_validation.csv", EPIC_HEADER + EPIC_ROWS)
    write(tmp_path / "EPIC_100_video_info.csv", EPIC_VIDEO_INFO)  # found next to the manifest
    table = read_epic100_csv(path)

    assert (table.format, table.multilabel, table.classes) == ("epic100", False, epic100_verbs())
    assert [c.clip_id for c in table] == ["P01_11_0", "P01_11_12", "P01_14_173"]
    first, second, third = table
    assert first.path == "P01/videos/P01_11.MP4" and third.path == "P01/videos/P01_14.MP4"
    assert (first.start, first.end) == (0.0, 1.89)
    assert (second.start, second.end) == (51.98, 53.03)
    assert (third.start, third.end) == (600.35, 615.25)
    assert [c.labels for c in table] == [(0,), (13,), (9,)]
    assert {c.split for c in table} == {"validation"}
    assert first.extras == {
        "verb_class": 0,
        "noun_class": 2,
        "all_noun_classes": (2,),
        "participant_id": "P01",
        "video_id": "P01_11",
        "start_frame": 1,
        "stop_frame": 113,
        "narration": "take plate",
        "frames_dir": "P01/rgb_frames/P01_11",
        "fps": 60.0,  # rgb_frames and frame numbers of EPIC-55 videos are at 60 fps ...
        "video_fps": 59.9400599400599,  # ... though the camera recorded 59.94
    }
    assert second.extras["all_noun_classes"] == (49, 36) and second.extras["noun_class"] == 49
    assert abs(third.start * third.extras["fps"] - third.extras["start_frame"]) <= 1


def test_epic100_test_file_is_unlabelled_and_extension_videos_are_50fps(tmp_path):
    (clip,) = read_epic100_csv(write(tmp_path / "EPIC_100_test_timestamps.csv", EPIC_TEST))
    assert clip.split == "test" and clip.labels == () and clip.extras["verb_class"] is None
    assert (clip.start, clip.end, clip.extras["fps"], clip.extras["video_fps"]) == (2.86, 3.87, 50.0, None)
    assert abs(clip.end * 50 - clip.extras["stop_frame"]) <= 1  # frame numbers are t x 50 to within a frame


def test_epic_timestamps_video_info_and_bad_rows(tmp_path):
    assert parse_timestamp("00:00:00.14") == 0.14 and parse_timestamp("01:02:03.5") == 3723.5
    for bad in ("1:2", "00:61:00.00", "abc", ""):
        with pytest.raises(ValueError):
            parse_timestamp(bad)
    info = read_epic_video_info(write(tmp_path / "info.csv", EPIC_VIDEO_INFO))
    assert info == {"P01_11": 59.9400599400599, "P01_14": 59.9400599400599, "P01_101": 50.0}

    row = "P01_11_0,P01,P01_11,00:00:00.560,{start},00:00:01.89,1,113,take plate,take,{verb},plate,2,['plate'],[2]\n"
    bad_rows = [
        (row.format(start="0.5", verb=0), "start_timestamp '0.5' is not a HH:MM:SS.ss timestamp"),
        (row.format(start="00:00:02.00", verb=0), "stop_timestamp 00:00:01.89 is before"),
        (row.format(start="00:00:00.00", verb=97), "verb_class 97 is outside the 97 classes"),
    ]
    for bad, message in bad_rows:
        path = write(tmp_path / "EPIC_100_train.csv", EPIC_HEADER + EPIC_ROWS + bad)
        with pytest.raises(ManifestError, match=rf"EPIC_100_train\.csv:5: {message}"):
            read_epic100_csv(path)


# ----------------------------------------------------------------------------- generic CSV and PySlowFast lists


def test_generic_csv_with_header_spans_and_names(tmp_path):
    text = (
        "path,label,start,end\n"
        "cooking/a.mp4,stir,,\n"
        "cooking/b.mp4,chop,2.5,7\n"
        "cooking/b.mp4,stir,7,\n"
        "/abs/c.webm,,,\n"
    )
    table = read_generic_csv(write(tmp_path / "clips_val.csv", text))
    assert (table.format, table.classes) == ("generic", ["chop", "stir"])
    assert [c.clip_id for c in table] == ["cooking/a", "cooking/b_2.5_7", "cooking/b_7_end", "/abs/c"]
    assert [c.path for c in table] == ["cooking/a.mp4", "cooking/b.mp4", "cooking/b.mp4", "/abs/c.webm"]
    assert [(c.start, c.end) for c in table] == [(0.0, None), (2.5, 7.0), (7.0, None), (0.0, None)]
    assert [c.labels for c in table] == [(1,), (0,), (1,), ()]
    assert table[1].extras["label_name"] == "chop" and table[3].extras["label_name"] is None
    assert {c.split for c in table} == {"val"}


def test_generic_csv_without_header_integer_labels_and_errors(tmp_path):
    table = read_generic_csv(write(tmp_path / "train.csv", "x/one.mp4,2\nx/two.mkv,0,1.0,3.0\n"))
    assert table.classes == ["0", "1", "2"] and [c.labels for c in table] == [(2,), (0,)]
    assert [c.clip_id for c in table] == ["x/one", "x/two"]  # a path listed once keeps its plain id
    named = read_generic_csv(write(tmp_path / "n.csv", "x/one.mp4,zumba\nx/two.mp4,0\n"), classes=kinetics400_classes())
    assert [c.labels for c in named] == [(399,), (0,)]  # a name, or an integer index into the classes

    for row, message in [("x/z.mp4,0,5,5", "not after"), ("x/z.mp4,0,a", "start 'a'"), ("x/z.mp4", "found 1")]:
        path = write(tmp_path / "bad.csv", "path,label,start,end\nx/y.mp4,0,,\n" + row + "\n")
        with pytest.raises(ManifestError, match=rf"bad\.csv:3: .*{message}"):
            read_generic_csv(path)
    with pytest.raises(ManifestError, match=r"x\.csv:1: label 'nope'"):
        read_generic_csv(write(tmp_path / "x.csv", "a.mp4,nope\n"), classes=["yes"])


def test_pyslowfast_list(tmp_path):
    text = "/data/k400/train/abseiling/-3B32lodo2M_000059_000069.mp4 0\nvideos/with space.mp4 399\n\n"
    table = read_pyslowfast_list(write(tmp_path / "val.csv", text), classes=kinetics400_classes())
    assert table.format == "pyslowfast" and len(table.classes) == 400
    assert [c.clip_id for c in table] == ["/data/k400/train/abseiling/-3B32lodo2M_000059_000069", "videos/with space"]
    assert [c.labels for c in table] == [(0,), (399,)]
    assert [(c.start, c.end, c.split) for c in table] == [(0.0, None, "val")] * 2
    assert table[1].extras["label_name"] == "zumba"
    assert read_pyslowfast_list(write(tmp_path / "train.csv", "a.mp4 3\n")).classes == ["0", "1", "2", "3"]
    with pytest.raises(ManifestError, match=r"bad\.csv:2: label 'abseiling'"):
        read_pyslowfast_list(write(tmp_path / "bad.csv", "a.mp4 1\nb.mp4 abseiling\n"))


# ----------------------------------------------------------------------------- detection, loading, resolution


@pytest.mark.parametrize(
    "text, fmt",
    [
        ("\ufeff" + KINETICS_HEADER + "abseiling,abc,0,10,train\n", "kinetics"),  # byte-order mark
        ("id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n", "charades_ego"),
        (EPIC_HEADER + EPIC_ROWS, "epic100"),
        (EPIC_TEST, "epic100"),
        ("path,label\na.mp4,x\n", "generic"),
        ("\nclips/a.mp4,3,0,5\n", "generic"),
        ("/data/a.mp4 3\n", "pyslowfast"),
    ],
)
def test_detect_format(tmp_path, text, fmt):
    path = write(tmp_path / "m.csv", text)
    assert detect_format(path) == fmt


def test_detect_format_refuses_an_unknown_file(tmp_path):
    with pytest.raises(ManifestError, match="cannot tell the manifest format"):
        detect_format(write(tmp_path / "m.csv", "hello,world\n"))


def test_resolve_video_kinetics_layouts_and_extensions(tmp_path):
    rows = "abseiling,aaa,0,10,train\nair drumming,bbb,5,15,train\nabseiling,ccc,1,11,train\nzumba,ddd,0,10,train\n"
    table = load_manifest(write(tmp_path / "train.csv", "\ufeff" + KINETICS_HEADER + rows))
    flat, by_label, by_split, missing = table
    root = tmp_path / "videos"
    expected = [
        write(root / f"{flat.clip_id}.mp4", ""),
        write(root / "train" / "air_drumming" / f"{by_label.clip_id}.webm", ""),
        write(root / "train" / f"{by_split.clip_id}.mkv", ""),
        None,
    ]
    assert [resolve_video(table, c, root) for c in table] == expected
    assert clip_frame_rate(table, flat) is None


def test_resolve_video_epic_video_then_frames_folder(tmp_path):
    table = load_manifest(write(tmp_path / "EPIC_100_validation.csv", EPIC_HEADER + EPIC_ROWS))
    first, _, third = table
    root = tmp_path / "EPIC-KITCHENS"
    assert resolve_video(table, first, root) is None
    frames = root / "P01" / "rgb_frames" / "P01_11"
    write(frames / "frame_0000000001.jpg", "")
    assert resolve_video(table, first, root) == frames
    assert clip_frame_rate(table, first, frames) == clip_frame_rate(table, first) == 60.0
    video = write(root / "P01" / "videos" / "P01_11.MP4", "")
    assert resolve_video(table, first, root) == video  # the video wins over the frames
    assert clip_frame_rate(table, first, video) is None
    assert resolve_video(table, third, root) is None


# ----------------------------------------------------------------------------- check_manifest


def test_check_manifest_reports_each_problem_with_its_line(tmp_path):
    text = KINETICS_HEADER + (
        "abseiling,aaa,0,10,train\n"  # 2: present
        "abseiling,bbb,0,10,train\n"  # 3: missing file
        "abseiling,aaa,0,10,train\n"  # 4: same id as line 2
        "abseiling,ccc,0,10\n"  # 5: a field short
        "abseiling,ddd,ten,20,train\n"  # 6: bad time
        "\"air drumming\",eee,30,20,val\n"  # 7: ends before it starts
        "air drumming,fff,0,10,val\n"  # 8: present, in <split>/<label>/
    )
    path = write(tmp_path / "train.csv", text)
    root = tmp_path / "videos"
    write(root / "aaa_000000_000010.mp4", "")
    write(root / "val" / "air drumming" / "fff_000000_000010.mp4", "")

    report = check_manifest(path, root)
    assert (report.format, report.rows, report.clips, report.classes) == ("kinetics", 7, 4, 400)  # the shipped Kinetics-400 list
    assert report.splits == {"train": 3, "val": 1}
    assert report.missing == [(3, "bbb_000000_000010", str(root / "bbb_000000_000010.mp4"))]
    assert report.duplicates == [(4, "aaa_000000_000010", 2)]
    assert report.unreadable_rows == [
        (5, "expected 5 fields (label,youtube_id,time_start,time_end,split), found 4"),
        (6, "time_start 'ten' is not a number"),
        (7, "time_end 20 is not after time_start 30"),
    ]
    assert not report.ok
    summary = report.summary()
    for needle in ("rows: 7 (4 readable, 3 unreadable)", "missing videos: 1 of 4", "line 3: bbb_000000_000010",
                   "line 4: aaa_000000_000010 (first on line 2)", "line 6: time_start 'ten' is not a number",
                   "splits: train 3, val 1", "result: PROBLEMS"):
        assert needle in summary
    with pytest.raises(ManifestError):  # the strict reader still stops at the first bad row
        read_kinetics_csv(path)


def test_check_manifest_missing_files_alone_pass_but_not_too_many(tmp_path):
    ids = [f"v{i}" for i in range(10)]
    path = write(tmp_path / "val.csv", KINETICS_HEADER + "".join(f"abseiling,{v},0,10,val\n" for v in ids))
    root = tmp_path / "videos"
    assert not check_manifest(path, root).ok  # nothing found: a wrong video root
    write(root / "val" / "v0_000000_000010.webm", "")
    assert not check_manifest(path, root).ok  # 9 of 10 missing (over 15 %): still a wrong root
    for v in ids[1:9]:
        write(root / "val" / f"{v}_000000_000010.mp4", "")
    report = check_manifest(path, root)  # 1 of 10 missing: what a Kinetics download lacks
    assert report.ok and len(report.missing) == 1 and "result: OK" in report.summary()
    bad = check_manifest(write(tmp_path / "bad.csv", "label,youtube_id,time_start,split\n"), root, format="kinetics")
    assert bad.unreadable_rows == [(1, "header lacks column(s) time_end (found label, youtube_id, time_start, split)")]


def test_tolerant_scans_match_the_strict_readers(tmp_path):
    kinetics = write(tmp_path / "k.csv", KINETICS_HEADER + "abseiling,aaa,0,10,train\n\"air drumming\",b,3,9,val\n")
    table, lines, problems = scan_kinetics_csv(kinetics)
    strict = read_kinetics_csv(kinetics)
    assert (table.clips, table.classes, lines, problems) == (strict.clips, strict.classes, [2, 3], [])
    assert [c.extras for c in table] == [c.extras for c in strict]

    header = (
        "id,subject,scene,quality,relevance,verified,script,objects,descriptions,"
        "actions,length,egocentric,charades_video\n"
    )
    rows = "AB1,S,K,6,6,Yes,s,o,\"two\nlines\",c004 0.0 1.5;c001 1 2,10.5,No,\nAB1EGO,S,K,6,6,Yes,s,o,d,,8,,\n"
    charades = write(tmp_path / "CharadesEgo_v1_test.csv", header + rows)
    table, lines, problems = scan_charades_ego_csv(charades)
    strict = read_charades_ego_csv(charades)
    assert (table.clips, table.classes, lines, problems) == (strict.clips, strict.classes, [2, 4], [])
    for scanned, parsed in zip(table, strict):
        assert (scanned.extras["ego"], scanned.extras["actions"]) == (parsed.extras["ego"], parsed.extras["actions"])


def test_check_manifest_epic_frames_and_probe(tmp_path):
    import av
    import numpy as np

    path = write(tmp_path / "EPIC_100_validation.csv", EPIC_HEADER + EPIC_ROWS)
    root = tmp_path / "EPIC-KITCHENS"
    write(root / "P01" / "rgb_frames" / "P01_11" / "frame_0000000001.jpg", "")
    write(root / "P01" / "videos" / "P01_14.MP4", "not a video")
    report = check_manifest(path, root, probe_videos=True)
    assert report.missing == [] and report.duplicates == [] and report.unreadable_rows == []
    assert [(ln, p) for ln, p, _ in report.unreadable_videos] == [(4, str(root / "P01" / "videos" / "P01_14.MP4"))]
    assert not report.ok and "unreadable videos: 1" in report.summary()

    with av.open(str(root / "P01" / "videos" / "P01_14.MP4"), "w") as out:  # a real 2-frame video
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for _ in range(2):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode())
    assert check_manifest(path, root, probe_videos=True).ok
