"""Label ids come from the datasets' shipped class lists (the model zoo's ids), not from the labels in a file."""
import pytest

from data_manifests.classes import kinetics400_classes, read_class_list
from pipeline.errors import PipelineError
from pipeline.stages.common import load_table, resolve_sampling

KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"
CHARADES_HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length,egocentric,charades_video\n"


def test_a_kinetics_subset_keeps_the_model_zoo_ids(tmp_path):
    # Without "abseiling" (id 0) a from-the-file list would shift every id by one.
    csv = tmp_path / "val.csv"
    csv.write_text(KINETICS_HEADER + "air drumming,aaa,0,10,val\nzumba,bbb,5,15,val\n")
    table = load_table(str(csv))
    assert len(table.classes) == 400 and table.classes == kinetics400_classes()
    assert [c.labels for c in table] == [(1,), (399,)]


def test_a_label_outside_the_list_is_one_clear_error(tmp_path):
    csv = tmp_path / "k700.csv"
    csv.write_text(KINETICS_HEADER + "air drumming,aaa,0,10,train\nwashing hands with soap,ccc,0,10,train\n")
    with pytest.raises(PipelineError, match=r"k700.csv:3: label 'washing hands with soap' .*set 'classes'"):
        load_table(str(csv))
    listed = tmp_path / "k700_classes.txt"
    listed.write_text("air drumming\nwashing hands with soap\n")
    table = load_table(str(csv), classes=str(listed))
    assert table.classes == ["air drumming", "washing hands with soap"] and table[1].labels == (1,)


def test_a_charades_ego_file_missing_classes_still_has_157(tmp_path):
    csv = tmp_path / "CharadesEgo_v1_test.csv"
    csv.write_text(CHARADES_HEADER + "AB12EGO,s1,Kitchen,6,6,Yes,x,cup,x,c003 0.0 2.0;c156 1.0 3.0,5.0,Yes,\n")
    table = load_table(str(csv))
    assert len(table.classes) == 157 and table.classes[0] == "c000"
    assert table[0].labels == (3, 156)


@pytest.mark.parametrize("text, expected", [
    ("abseiling\nair drumming\n", ["abseiling", "air drumming"]),
    ("name\nabseiling\nair drumming\n", ["abseiling", "air drumming"]),
    ("c000 Holding some clothes\nc001 Putting clothes somewhere\n", ["c000", "c001"]),
    ("id,key,instances,category\n0,take,1,retrieve\n1,put,1,leave\n", ["take", "put"]),
    ("id,name\n0,abseiling\n1,air drumming\n", ["abseiling", "air drumming"]),
])
def test_class_list_files(tmp_path, text, expected):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    assert read_class_list(path) == expected


def test_class_list_problems_are_named(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("a\nb\na\n")
    with pytest.raises(PipelineError, match="'a' is listed twice"):
        load_table(str(tmp_path / "x.csv"), classes=str(path))
    with pytest.raises(PipelineError, match="class list not found"):
        load_table(str(tmp_path / "x.csv"), classes=str(tmp_path / "none.txt"))


@pytest.mark.parametrize("arch, frames, step, slow", [
    # PySlowFast's decoder: linspace(0, 8 * 8 - 1, 8) -> frames 0, 9, ..., 63 of a 30 fps video
    ("slow_r50", 8, 9 / 30, list(range(8))),
    # linspace(0, 63, 32): 63 / 31 frames apart
    ("slowfast_r50", 32, 63 / 31 / 30, [0, 4, 8, 13, 17, 22, 26, 31]),
])
def test_each_backbone_brings_its_own_clip(arch, frames, step, slow):
    # PySlowFast: Slow 8x8 and SlowFast 32x2 at TARGET_FPS 30, jitter 256-320, crop 224, test 256.
    from student.backbones import create_backbone

    sampling = resolve_sampling(None, create_backbone(arch, depths=(1, 1, 1, 1), width=8))
    assert (sampling.num_frames, sampling.frame_step, list(sampling.slow_indices)) == (frames, pytest.approx(step), slow)
    assert (sampling.train_jitter_scales, sampling.crop, sampling.test_short_side) == ((256, 320), 224, 256)
    assert sampling.span == pytest.approx(64 / 30)
