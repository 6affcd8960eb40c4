"""Each shipped recipe pinned to the Ego-Exo release's configs (facebookresearch/Ego-Exo configs/ego-exo/)."""
from importlib.resources import files

import pytest

from pipeline.errors import ConfigError
from pipeline.recipes import RECIPES, recipe_path
from pipeline.stages import load_stage_config

# The release's numbers, per config family (SOLVER.*, DATA.*, MODEL.DROPOUT_RATE, loss weights).
K400 = dict(epochs=200, lr=0.8, base_batch_size=512, lr_policy="cosine", warmup_epochs=34.0, warmup_start_lr=0.08)
CHARADES = dict(epochs=60, lr=0.25, base_batch_size=64, lr_policy="cosine", warmup_epochs=0.0)
EPIC100 = dict(epochs=30, lr=0.02, base_batch_size=128, lr_policy="steps", steps=[0, 20, 25], lrs=[1.0, 0.1, 0.01],
               warmup_epochs=0.0)
FRAMES = {"slow_r50": (8, 8), "slowfast_r50": (32, 2), "slowfast_r101": (32, 2)}

EXPECTED = {
    # name: (schedule, dropout, loss weights (action, ego, object, hand_map, object_map), precise BN batches)
    "k400/baseline_slow_r50": (K400, 0.5, (1.0, 0, 0, 0, 0), 200),
    "k400/egoexo_slow_r50": (K400, 0.0, (0.5, 0.1, 0.5, 1.0, 1.0), 0),
    "k400/baseline_slowfast_r50": (K400, 0.5, (1.0, 0, 0, 0, 0), 200),
    "k400/egoexo_slowfast_r50": (K400, 0.0, (0.5, 0.1, 0.5, 1.0, 1.0), 0),
    "k400/baseline_slowfast_r101": (K400, 0.5, (1.0, 0, 0, 0, 0), 200),
    "k400/egoexo_slowfast_r101": (K400, 0.0, (0.5, 0.1, 0.5, 1.0, 1.0), 0),
    "charades-ego/finetune_slow_r50": (CHARADES, 0.5, (1.0, 0, 0, 0, 0), 0),
    "charades-ego/finetune_slowfast_r50": (CHARADES, 0.5, (1.0, 0, 0, 0, 0), 0),
    "charades-ego/finetune_slowfast_r101": (CHARADES, 0.5, (1.0, 0, 0, 0, 0), 0),
    "charades-ego/egoexo_star_slowfast_r50": (CHARADES, 0.5, (1.0, 0, 0, 0.1, 0.1), 0),
    "charades-ego/egoexo_star_slowfast_r101": (CHARADES, 0.5, (1.0, 0, 0, 0.1, 0.1), 0),
    "epic-100/finetune_slowfast_r50": (EPIC100, 0.5, (1.0, 0, 0, 0, 0), 200),
    "epic-100/finetune_slowfast_r101": (EPIC100, 0.5, (1.0, 0, 0, 0, 0), 200),
    "epic-100/egoexo_star_slowfast_r50": (EPIC100, 0.5, (1.0, 0, 0, 3.0, 3.0), 0),
    "epic-100/egoexo_star_slowfast_r101": (EPIC100, 0.5, (1.0, 0, 0, 3.0, 3.0), 0),
}


def test_every_recipe_file_is_listed_and_every_listing_has_a_file():
    on_disk = {f"{d.name}/{f.name[:-5]}" for d in files("pipeline").joinpath("recipes").iterdir() if d.is_dir()
               for f in d.iterdir() if f.name.endswith(".yaml")}
    assert on_disk == {r.name for r in RECIPES}
    assert set(EXPECTED) == {r.name for r in RECIPES if r.stage != "evaluate"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_matches_the_release(name):
    recipe = next(r for r in RECIPES if r.name == name)
    cfg = load_stage_config(recipe.stage, f"recipe:{name}")  # validates, as a run would
    schedule, dropout, weights, precise = EXPECTED[name]
    for key, value in schedule.items():
        assert getattr(cfg.optim, key) == value, key
    assert cfg.optim.batch_size == cfg.optim.base_batch_size  # the release's global batch
    assert (cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay, cfg.optim.bn_weight_decay) == (0.9, True, 1e-4, 0.0)
    assert cfg.optim.precise_bn_batches == precise
    assert cfg.model.dropout == dropout
    loss = cfg.loss
    assert (loss.action, loss.ego, loss.object, loss.hand_map, loss.object_map, loss.temperature) == (*weights, 1.0)
    arch = cfg.model.backbone
    assert name.endswith(arch)
    assert (cfg.data.num_frames, cfg.data.sampling_rate) == FRAMES[arch]
    assert (cfg.data.train_jitter_scales, cfg.data.crop, cfg.data.test_crop) == ([256, 320], 224, 256)
    # Kinetics videos at PySlowFast's TARGET_FPS 30 through its decoder (frames at linspace
    # positions); Charades-Ego's 24 fps and EPIC's 60 fps frames stepped by the frame loaders.
    fps, spacing = {"k400": (30.0, "linspace"), "charades-ego": (24.0, "stride"), "epic-100": (60.0, "stride")}[name.split("/")[0]]
    assert (cfg.data.target_fps, cfg.data.frame_spacing) == (fps, spacing)
    maps = weights[3] > 0
    assert cfg.model.interaction_maps == maps and cfg.model.map_hidden_channels == 512
    assert bool(cfg.signals) == (maps or weights[1] > 0)
    if name.startswith("charades-ego"):
        assert cfg.data.view == "ego" and cfg.manifest_format == "charades_ego"
    if name.startswith("epic-100"):
        assert cfg.loss.noun == 1.0 and cfg.manifest_format == "epic100"


@pytest.mark.parametrize("dataset, ensemble, fps", [("charades-ego", "max", 24.0), ("epic-100", "sum", 60.0)])
def test_evaluation_recipes_test_10_by_3_views_at_256(dataset, ensemble, fps):
    cfg = load_stage_config("evaluate", f"recipe:{dataset}/evaluate")
    assert (cfg.temporal_views, cfg.spatial_crops, cfg.short_side, cfg.ensemble) == (10, 3, 256, ensemble)
    assert (cfg.target_fps, cfg.frame_spacing) == (fps, "stride")


def test_recipe_for_another_stage_or_unknown_is_refused():
    with pytest.raises(ConfigError, match="recipe for 'pipeline run train-student'"):
        load_stage_config("finetune", "recipe:k400/egoexo_slowfast_r50")
    with pytest.raises(ConfigError, match="unknown recipe"):
        recipe_path("k400/egoexo_slowfast_r152")


def test_overrides_apply_on_top_of_a_recipe():
    cfg = load_stage_config("train-student", "recipe:k400/egoexo_slowfast_r50", ["optim.batch_size=64"])
    assert cfg.optim.batch_size == 64 and cfg.optim.lr == 0.8  # lr_at scales it to 0.1
