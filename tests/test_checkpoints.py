"""Checkpoints in and out: the release's and PySlowFast's names and shapes land in our tensors.

The reference state dicts are written here from PySlowFast's and the Ego-Exo release's
published naming and shapes (resnet_helper / stem_helper / video_model_builder, the
release's heads, c2_model_loading's Caffe2 blob names), not from our model's state_dict.
"""
import pickle

import numpy as np
import pytest
import torch

from pipeline.cli import main
from student.backbones import PUBLISHED_PARAMS, create_backbone
from student.checkpoints import (CheckpointError, caffe2_to_pyslowfast_name, load_student, load_weights, read_weights,
                                 to_pyslowfast)
from student.heads import EgoExoStudent

# ---------------------------------------------------------------------------
# Reference layouts
# ---------------------------------------------------------------------------

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
SLOW_KERNELS, FAST_KERNELS = (1, 1, 1, 3, 3), (5, 3, 3, 3, 3)  # stem, res2..res5


def resnet_convs(depth, slowfast, fusion_kernel=7):
    """Each conv + BN of a Slow / SlowFast 8x8 ResNet as (place, shape): place is
    (stage, pathway, block, branch); the stems are (1, p, None, None), the lateral conv after
    stage s is (s, "fuse", None, None). Fast: 1/8 the width, fusion doubles its channels."""
    widths, kernels = ([64, 8], [SLOW_KERNELS, FAST_KERNELS]) if slowfast else ([64], [SLOW_KERNELS])
    convs = [((1, p, None, None), (w, 3, kernels[p][0], 7, 7)) for p, w in enumerate(widths)]
    dims = list(widths)
    for stage, blocks in enumerate(DEPTHS[depth], start=2):
        if slowfast:
            convs.append(((stage - 1, "fuse", None, None), (2 * dims[1], dims[1], fusion_kernel, 1, 1)))
            dims[0] += 2 * dims[1]
        for p, w in enumerate(widths):
            inner = w * 2 ** (stage - 2)
            for i in range(blocks):
                c_in = dims[p] if i == 0 else 4 * inner
                if i == 0:
                    convs.append(((stage, p, i, "1"), (4 * inner, c_in, 1, 1, 1)))
                convs.append(((stage, p, i, "2a"), (inner, c_in, kernels[p][stage - 1], 1, 1)))
                convs.append(((stage, p, i, "2b"), (inner, inner, 1, 3, 3)))
                convs.append(((stage, p, i, "2c"), (4 * inner, inner, 1, 1, 1)))
            dims[p] = 4 * inner
    return convs, sum(dims)


def pyslowfast_name(place):
    """PySlowFast's (conv, bn) module names for a place."""
    stage, p, block, branch = place
    if p == "fuse":
        return f"s{stage}_fuse.conv_f2s", f"s{stage}_fuse.bn"
    if block is None:
        return f"s1.pathway{p}_stem.conv", f"s1.pathway{p}_stem.bn"
    b = f"s{stage}.pathway{p}_res{block}"
    conv = f"{b}.branch1" if branch == "1" else f"{b}.branch2.{branch[1]}"
    return conv, f"{conv}_bn"


def caffe2_name(place, depth):
    """The Caffe2 SlowFast (conv, bn) blob prefixes for a place: Fast blobs start with t_,
    laterals hang off the Fast pool1 or a stage's last block."""
    stage, p, block, branch = place
    if p == "fuse":
        conv = "t_pool1_subsample" if stage == 1 else f"t_res{stage}_{DEPTHS[depth][stage - 2] - 1}_branch2c_bn_subsample"
        return conv, f"{conv}_bn"
    t = "t_" if p == 1 else ""
    if block is None:
        return f"{t}conv1", f"{t}res_conv1_bn"
    conv = f"{t}res{stage}_{block}_branch{branch}"
    return conv, f"{conv}_bn"


def pyslowfast_shapes(depth, slowfast, fusion_kernel=7):
    convs, feat_dim = resnet_convs(depth, slowfast, fusion_kernel)
    shapes = {}
    for place, shape in convs:
        conv, bn = pyslowfast_name(place)
        shapes[f"{conv}.weight"] = shape
        shapes.update({f"{bn}.{s}": shape[:1] for s in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"{bn}.num_batches_tracked"] = ()
    return shapes, feat_dim


def caffe2_shapes(depth, slowfast):
    convs, feat_dim = resnet_convs(depth, slowfast)
    shapes = {}
    for place, shape in convs:
        conv, bn = caffe2_name(place, depth)
        shapes[f"{conv}_w"] = shape
        shapes.update({f"{bn}_{s}": shape[:1] for s in ("s", "b", "rm", "riv")})
    shapes.update({"pred_w": (400, feat_dim), "pred_b": (400,)})
    return shapes


# The release's heads (module name -> classes) per layout, and the names they take in our student.
RELEASE_HEADS = {
    "baseline": {"head.projection": 400},
    "multitask": {"head.projections.0": 400, "head.projections.1": 2, "head.projections.2": 1000},
    "charades-ego": {"headcharades-ego.projection": 157},
    "epic100": {"headepic100.projections.0": 97, "headepic100.projections.1": 300},
    "epic55": {"headepic.projections.0": 125, "headepic.projections.1": 352},
}
OURS = {"head.projection": "head.projection", "head.projections.0": "head.projection",
        "head.projections.1": "ego_head", "head.projections.2": "object_head",
        "headcharades-ego.projection": "head.projection", "headepic100.projections.0": "head.projection",
        "headepic100.projections.1": "noun_head", "headepic.projections.0": "head.projection",
        "headepic.projections.1": "noun_head", "handobjhead.pathway0_conv_fcn0": "map_head.hidden",
        "handobjhead.score_projection": "map_head.score"}
# HandObjHeadSingle on the slow pathway's res5 (2048 channels): 1x3x3 conv -> 512, 1x1x1 conv -> 2.
HANDOBJ = {"handobjhead.pathway0_conv_fcn0.weight": (512, 2048, 1, 3, 3), "handobjhead.pathway0_conv_fcn0.bias": (512,),
           "handobjhead.score_projection.weight": (2, 512, 1, 1, 1), "handobjhead.score_projection.bias": (2,)}


def release_shapes(depth, slowfast, fusion_kernel, layout, handobj):
    shapes, feat_dim = pyslowfast_shapes(depth, slowfast, fusion_kernel)
    for module, n in RELEASE_HEADS[layout].items():
        shapes.update({f"{module}.weight": (n, feat_dim), f"{module}.bias": (n,)})
    return {**shapes, **(HANDOBJ if handobj else {})}


def materialise(shapes, checked, seed=0):
    """Zeros of the given shapes (int64 BN counters), random values in the ``checked`` ones."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(7)
        elif name in checked:
            out[name] = torch.randn(shape, generator=g)
        else:
            out[name] = torch.zeros(shape)
    return out


def our_key(name):
    module, _, param = name.rpartition(".")
    return f"{OURS[module]}.{param}" if module in OURS else f"backbone.{name}"


# ---------------------------------------------------------------------------
# Release .pyth files
# ---------------------------------------------------------------------------

CASES = {
    # arch, depth, slowfast, fusion kernel, head layout, handobj head: one per released kind of model
    "SLOW_8x8_R50": ("slow_r50", 50, False, 7, "baseline", False),
    "Ego_Exo_SLOW_8x8_R50": ("slow_r50", 50, False, 7, "multitask", True),
    "Ego_Exo_SLOWFAST_8x8_R50": ("slowfast_r50", 50, True, 7, "multitask", True),
    "Ego_Exo_star_SLOWFAST_8x8_R50_epic100": ("slowfast_r50", 50, True, 7, "epic100", True),
    "SLOWFAST_8x8_R50_epic55": ("slowfast_r50", 50, True, 7, "epic55", False),
    "SLOWFAST_8x8_R101_charades_ego": ("slowfast_r101", 101, True, 5, "charades-ego", False),
}
CHECKED = ["s1.pathway0_stem.conv.weight", "s4.pathway0_res5.branch2.a_bn.running_var", "s5.pathway0_res2.branch2.c.weight",
           "s2.pathway0_res0.branch1.weight", "s1.pathway1_stem.conv.weight", "s1_fuse.conv_f2s.weight",
           "s4_fuse.bn.running_mean", "s5.pathway1_res0.branch2.a.weight", *HANDOBJ]


@pytest.mark.parametrize("release", list(CASES))
def test_release_checkpoint_lands_in_our_tensors(release, tmp_path):
    arch, depth, slowfast, fusion_kernel, layout, handobj = CASES[release]
    shapes = release_shapes(depth, slowfast, fusion_kernel, layout, handobj)
    heads = [f"{m}.{p}" for m in RELEASE_HEADS[layout] for p in ("weight", "bias")]
    state = materialise(shapes, [*CHECKED, *heads])
    ckpt = {"epoch": 199, "model_state": state, "optimizer_state": {"state": {}}, "cfg": "MODEL:\n  DROPOUT_RATE: 0.0\n"}
    if depth == 50:  # through a file, with DDP's prefix; R101's 250 MB stays in memory
        ckpt["model_state"] = {f"module.{k}": v for k, v in state.items()}
        torch.save(ckpt, tmp_path / f"{release}.pyth")
        ckpt = tmp_path / f"{release}.pyth"

    model, meta = load_student(ckpt, arch)
    report = meta["report"]
    assert report.unexpected == [] and report.mismatched == []
    assert len(report.loaded) == len(shapes)
    assert report.missing == []  # a head the file lacks is not built (it would travel on as random weights)
    counts = {OURS[m]: n for m, n in RELEASE_HEADS[layout].items()}
    assert meta["model_args"] == {
        "backbone": arch, "num_actions": counts["head.projection"], "num_objects": counts.get("object_head", 0),
        "num_nouns": counts.get("noun_head", 0), "ego_head": layout == "multitask", "dropout": 0.0,
        "interaction_maps": handobj,
        "map_hidden_channels": 512 if handobj else None}
    assert meta["epoch"] == 199 and meta["format"] == "pyslowfast"
    ours = model.state_dict()
    for name in [*CHECKED, *heads]:
        if name in shapes:
            assert torch.equal(ours[our_key(name)], state[name]), name
    assert int(ours["backbone.s3.pathway0_res1.branch2.b_bn.num_batches_tracked"]) == 7


def test_epic100_noun_projection_is_the_noun_head_not_the_ego_head():
    model = EgoExoStudent(create_backbone("slow_tiny"), num_actions=4, num_objects=0, num_nouns=3, interaction_maps=False)
    state = dict(to_pyslowfast(model, "baseline")["model_state"])
    state["headepic100.projections.0.weight"] = state.pop("head.projection.weight")
    state["headepic100.projections.0.bias"] = state.pop("head.projection.bias")
    state["headepic100.projections.1.weight"] = torch.randn(3, model.head.projection.in_features)
    state["headepic100.projections.1.bias"] = torch.randn(3)
    loaded, meta = load_student({"model_state": state})
    assert torch.equal(loaded.noun_head.weight, state["headepic100.projections.1.weight"])
    assert torch.equal(loaded.head.projection.weight, state["headepic100.projections.0.weight"])
    assert meta["model_args"]["num_nouns"] == 3 and meta["report"].missing == [] and loaded.ego_head is None


def test_legacy_headobjhead_and_fine_tuning_from_kinetics(tmp_path):
    # Fine-tuning an EPIC model from the Ego-Exo K400 checkpoint: backbone and map head load,
    # the 400-way action head does not fit 97 verbs and is skipped, ego / object have no place.
    shapes = release_shapes(50, False, 7, "multitask", True)
    state = materialise(shapes, ["head.projections.0.weight", *HANDOBJ])
    state = {k.replace("handobjhead", "headobjhead"): v for k, v in state.items()}
    model = EgoExoStudent(create_backbone("slow_r50"), num_actions=97, num_objects=0, num_nouns=300)
    fresh_verbs = model.head.projection.weight.clone()
    report = load_weights(model, {"model_state": state})
    assert report.mismatched == ["head.projection.weight", "head.projection.bias"]
    assert report.unexpected == ["object_head.weight", "object_head.bias"]
    assert report.missing == ["noun_head.weight", "noun_head.bias"]
    assert torch.equal(model.head.projection.weight, fresh_verbs)
    assert torch.equal(model.map_head.hidden.weight, state["headobjhead.pathway0_conv_fcn0.weight"])


# ---------------------------------------------------------------------------
# Caffe2 .pkl
# ---------------------------------------------------------------------------

def test_caffe2_rules_on_named_blobs():
    expected = {
        "conv1_w": "s1.pathway0_stem.conv.weight",
        "res_conv1_bn_s": "s1.pathway0_stem.bn.weight",
        "res2_0_branch2a_w": "s2.pathway0_res0.branch2.a.weight",
        "res2_0_branch2a_bn_s": "s2.pathway0_res0.branch2.a_bn.weight",
        "res2_0_branch2a_bn_b": "s2.pathway0_res0.branch2.a_bn.bias",
        "res2_0_branch2a_bn_rm": "s2.pathway0_res0.branch2.a_bn.running_mean",
        "res2_0_branch2a_bn_riv": "s2.pathway0_res0.branch2.a_bn.running_var",
        "res2_0_branch1_w": "s2.pathway0_res0.branch1.weight",
        "res2_0_branch1_bn_riv": "s2.pathway0_res0.branch1_bn.running_var",
        "t_conv1_w": "s1.pathway1_stem.conv.weight",
        "t_res_conv1_bn_b": "s1.pathway1_stem.bn.bias",
        "t_res2_0_branch2a_w": "s2.pathway1_res0.branch2.a.weight",
        "t_pool1_subsample_w": "s1_fuse.conv_f2s.weight",
        "t_pool1_subsample_bn_s": "s1_fuse.bn.weight",
        "t_res2_2_branch2c_bn_subsample_w": "s2_fuse.conv_f2s.weight",
        "t_res4_5_branch2c_bn_subsample_bn_rm": "s4_fuse.bn.running_mean",
        "pred_w": "head.projection.weight",
        "pred_b": "head.projection.bias",
    }
    assert {blob: caffe2_to_pyslowfast_name(blob) for blob in expected} == expected


@pytest.mark.parametrize("arch, slowfast", [("slow_r50", False), ("slowfast_r50", True)])
def test_caffe2_pkl_lands_in_our_tensors(arch, slowfast, tmp_path):
    shapes = caffe2_shapes(50, slowfast)
    checked = ["conv1_w", "res_conv1_bn_riv", "res4_5_branch2a_bn_rm", "res3_0_branch1_w", "pred_w", "pred_b",
               "t_conv1_w", "t_pool1_subsample_w", "t_res3_3_branch2c_bn_subsample_bn_s", "t_res5_0_branch2a_w"]
    rng = np.random.default_rng(0)
    blobs = {k: rng.standard_normal(s, dtype=np.float32) if k in checked else np.zeros(s, np.float32)
             for k, s in shapes.items()}
    # What the model zoo's pickles also carry: the solver's iteration, rate and momentum buffers.
    solver = {"model_iter": np.array(300000), "lr": np.array(0.0001, np.float32), "pred_w_momentum": blobs["pred_w"] * 0}
    with open(tmp_path / "SLOWFAST_8x8_R50.pkl", "wb") as f:
        pickle.dump({"blobs": {**blobs, **solver}}, f, protocol=2)

    model, meta = load_student(tmp_path / "SLOWFAST_8x8_R50.pkl", arch)
    report = meta["report"]
    assert report.unexpected == [] and report.mismatched == []
    assert len(report.loaded) == len(shapes) and report.missing == []
    assert meta["format"] == "caffe2" and meta["model_args"]["num_actions"] == 400
    ours = model.state_dict()
    convs, _ = resnet_convs(50, slowfast)
    places = {caffe2_name(place, 50): pyslowfast_name(place) for place, _ in convs}
    pairs = {"pred_w": "head.projection.weight", "pred_b": "head.projection.bias"}
    for (c2_conv, c2_bn), (conv, bn) in places.items():
        pairs[f"{c2_conv}_w"] = f"backbone.{conv}.weight"
        pairs.update({f"{c2_bn}_{s}": f"backbone.{bn}.{p}" for s, p in
                      (("s", "weight"), ("b", "bias"), ("rm", "running_mean"), ("riv", "running_var"))})
    for blob in checked:
        if blob in blobs:
            assert torch.equal(ours[pairs[blob]], torch.from_numpy(blobs[blob])), blob


def test_unknown_caffe2_blob_is_refused_naming_it():
    blobs = {k: np.zeros(s, np.float32) for k, s in caffe2_shapes(50, False).items()}
    blobs["nonlocal_conv3_1_theta_w"] = np.zeros((512, 1024, 1, 1, 1), np.float32)
    with pytest.raises(CheckpointError, match="nonlocal_conv3_1_theta_w"):
        read_weights({"blobs": blobs})
    blobs.pop("nonlocal_conv3_1_theta_w")
    blobs["res2_0_branch2a_bn_sx"] = blobs.pop("res2_0_branch2a_bn_s")
    with pytest.raises(CheckpointError, match="res2_0_branch2a_bn_sx"):
        load_weights(EgoExoStudent(create_backbone("slow_r50"), 400), {"blobs": blobs})


# ---------------------------------------------------------------------------
# Strictness
# ---------------------------------------------------------------------------

def tiny_student(name="slow_tiny", seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(num_actions=5, num_objects=7, dropout=0.0, interaction_maps=True)
    return EgoExoStudent(create_backbone(name), **{**args, **kwargs})


def test_misspelled_backbone_key_is_refused_naming_it():
    state = to_pyslowfast(tiny_student())["model_state"]
    state["s2.pathway0_res0.branch2.a_bn.wieght"] = state.pop("s2.pathway0_res0.branch2.a_bn.weight")
    with pytest.raises(CheckpointError, match=r"s2\.pathway0_res0\.branch2\.a_bn\.wieght"):
        load_weights(tiny_student(), {"model_state": state})


def test_misspelled_head_key_is_refused_naming_it():
    state = to_pyslowfast(tiny_student())["model_state"]
    state["head.projections.0.wieght"] = state.pop("head.projections.0.weight")
    with pytest.raises(CheckpointError, match=r"head\.projections\.0\.wieght"):
        load_weights(tiny_student(), {"model_state": state})


def test_missing_or_misshaped_backbone_tensor_is_an_error():
    state = to_pyslowfast(tiny_student(seed=1))["model_state"]
    del state["s3.pathway0_res0.branch2.a.weight"]
    with pytest.raises(CheckpointError, match=r"backbone\.s3\.pathway0_res0\.branch2\.a\.weight \(missing\)"):
        load_weights(tiny_student(seed=2), state)
    with pytest.raises(CheckpointError, match="shape"):
        load_weights(tiny_student("slowfast_tiny"), to_pyslowfast(tiny_student())["model_state"])


def test_bn_counters_may_be_missing():
    state = {k: v for k, v in to_pyslowfast(tiny_student(seed=1))["model_state"].items()
             if not k.endswith("num_batches_tracked")}
    report = load_weights(tiny_student(seed=2), state)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []


def test_other_label_space_skips_the_action_head():
    source, target = tiny_student(seed=1), tiny_student(seed=2, num_actions=3)
    head_before = target.head.projection.weight.clone()
    report = load_weights(target, {"model": source.state_dict()})
    assert report.mismatched == ["head.projection.weight", "head.projection.bias"]
    assert torch.equal(target.head.projection.weight, head_before)
    assert torch.equal(target.backbone.s1.pathway0_stem.conv.weight, source.backbone.s1.pathway0_stem.conv.weight)


# ---------------------------------------------------------------------------
# Export and round trips
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("layout, kwargs, left_out", [
    ("multitask", {}, set()),
    ("baseline", {"num_objects": 0}, {"ego_head"}),
    ("epic100", {"num_objects": 0, "num_nouns": 4}, {"ego_head"}),
])
def test_roundtrip_ours_pyslowfast_ours(layout, kwargs, left_out, tmp_path):
    source = tiny_student("slowfast_tiny", seed=1, map_hidden_channels=16, **kwargs)
    torch.save(to_pyslowfast(source, layout, epoch=3), tmp_path / "out.pyth")
    ckpt = torch.load(tmp_path / "out.pyth", weights_only=True)
    assert ckpt["epoch"] == 3
    names = set(ckpt["model_state"])
    assert {"s1_fuse.conv_f2s.weight", "handobjhead.pathway0_conv_fcn0.weight", "handobjhead.score_projection.bias"} <= names
    assert {f"{m}.weight" for m in RELEASE_HEADS[layout]} <= names
    model, meta = load_student(tmp_path / "out.pyth")
    assert meta["model_args"]["backbone"] == "slowfast_tiny"
    theirs, ours = source.state_dict(), model.state_dict()
    kept = {k for k in theirs if k.split(".")[0] not in left_out}
    assert kept <= set(ours) and set(ours) - kept <= {"ego_head.weight", "ego_head.bias"}
    for k in kept:
        assert torch.equal(ours[k], theirs[k]), k


def test_ours_checkpoint_keeps_its_model_args(tmp_path):
    args = {"backbone": "slow_tiny", "num_actions": 5, "num_objects": 7, "dropout": 0.0, "interaction_maps": True}
    source = EgoExoStudent(create_backbone("slow_tiny"), 5, 7, dropout=0.0)
    torch.save({"model": source.state_dict(), "model_args": args, "classes": list("abcde")}, tmp_path / "c.pt")
    model, meta = load_student(tmp_path / "c.pt")
    assert meta["classes"] == list("abcde") and meta["model_args"] == args and meta["format"] == "ours"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in source.state_dict().items())
    with pytest.raises(CheckpointError, match="slow_tiny student, not slowfast_tiny"):
        load_student(tmp_path / "c.pt", "slowfast_tiny")


# ---------------------------------------------------------------------------
# Reading without running code
# ---------------------------------------------------------------------------

class _RunsCommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pyth_whose_cfg_runs_a_command_is_refused(tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.stages.common import load_checkpoint

    marker = tmp_path / "pwned"
    torch.save({"model_state": {}, "epoch": 1, "cfg": _RunsCommand(marker)}, tmp_path / "evil.pyth")
    with pytest.raises(PipelineError, match=r"refusing to load .*evil\.pyth.*system"):
        load_checkpoint(tmp_path / "evil.pyth")
    assert not marker.exists()


def test_pkl_whose_blob_runs_a_command_is_refused(tmp_path):
    from pipeline.stages.common import load_checkpoint

    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"blobs": {"conv1_w": _RunsCommand(marker)}}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refusing to load posix.system"):
        load_checkpoint(tmp_path / "evil.pkl")
    assert not marker.exists()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def test_convert_checkpoint_cli(tmp_path, capsys):
    from pipeline.stages.common import build_model, load_checkpoint

    source = EgoExoStudent(create_backbone("slow_tiny"), 6, num_objects=0, interaction_maps=False, ego_head=False)
    torch.save(to_pyslowfast(source, "charades-ego"), tmp_path / "in.pyth")
    assert main(["convert-checkpoint", str(tmp_path / "in.pyth"), "--arch", "slow_tiny", "--out", str(tmp_path / "o.pt")]) == 0
    out = capsys.readouterr().out
    assert "matched 104, missing 0, unexpected 0, shape-mismatched 0" in out
    ckpt = load_checkpoint(tmp_path / "o.pt")
    assert ckpt["source"]["format"] == "pyslowfast" and ckpt["model_args"]["num_actions"] == 6
    model = build_model(ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    assert torch.equal(model.head.projection.weight, source.head.projection.weight)

    assert main(["convert-checkpoint", str(tmp_path / "o.pt"), "--out", str(tmp_path / "back.pyth"), "--to", "pyslowfast",
                 "--layout", "charades-ego"]) == 0
    back = torch.load(tmp_path / "back.pyth", weights_only=True)["model_state"]
    original = torch.load(tmp_path / "in.pyth", weights_only=True)["model_state"]
    assert back.keys() == original.keys()  # the round trip writes back exactly what came in
    assert all(torch.equal(back[k], original[k]) for k in back)
    assert "left out" not in capsys.readouterr().out
    # Without --layout a student with only an action head gets PySlowFast's head.projection, no random extras.
    assert main(["convert-checkpoint", str(tmp_path / "o.pt"), "--out", str(tmp_path / "auto.pyth"), "--to", "pyslowfast"]) == 0
    auto = torch.load(tmp_path / "auto.pyth", weights_only=True)["model_state"]
    assert {k for k in auto if not k.startswith("s")} == {"head.projection.weight", "head.projection.bias"}


def test_misspelled_key_is_named_without_arch(tmp_path, capsys):
    source = EgoExoStudent(create_backbone("slow_tiny"), 6, num_objects=0, interaction_maps=False, ego_head=False)
    state = dict(to_pyslowfast(source, "baseline")["model_state"])
    state["s2.pathway0_res0.branch2.a_bn.wieght"] = state.pop("s2.pathway0_res0.branch2.a_bn.weight")
    torch.save({"model_state": state}, tmp_path / "typo.pyth")
    assert main(["convert-checkpoint", str(tmp_path / "typo.pyth"), "--out", str(tmp_path / "o.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "closest, slow_tiny" in err
    assert "s2.pathway0_res0.branch2.a_bn.wieght" in err and "s2.pathway0_res0.branch2.a_bn.weight (missing)" in err


def test_convert_checkpoint_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["convert-checkpoint", str(tmp_path / "none.pyth"), "--out", str(tmp_path / "o.pt")]) == 1
    torch.save({"model_state": {"s1.pathway0_stem.conv.weight": torch.zeros(8, 3, 1, 7, 7)}}, tmp_path / "part.pyth")
    assert main(["convert-checkpoint", str(tmp_path / "part.pyth"), "--arch", "slow_tiny", "--out", str(tmp_path / "o.pt")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: checkpoint not found") and err[1].startswith("error: ")
    assert len(err) == 2 and not (tmp_path / "o.pt").exists()


def test_student_list_matches_published_counts(capsys):
    assert main(["student", "list"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    for name, published in PUBLISHED_PARAMS.items():
        ours, shown = rows[name]
        assert abs(float(ours.rstrip("M")) - published / 1e6) < 0.01 and shown == f"{published / 1e6:.2f}M"
    assert rows["slow_r101"][1] == "-"
