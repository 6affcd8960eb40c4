"""The paper's recipes: one stage config per row of its tables, as the Ego-Exo release sets it.

Each ``<dataset>/<name>.yaml`` beside this file is a complete stage config (run it with
``pipeline run STAGE --config recipe:<dataset>/<name>`` plus your paths). :data:`RECIPES` says
which stage runs it, which release config it follows, and the published number each row of
the paper's tables reports for it (validation sets; Charades-Ego mAP, EPIC-100 verb / noun
top-1 from the release's README).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path


@dataclass(frozen=True)
class Recipe:
    name: str  # <dataset>/<file stem>
    stage: str
    release_config: str  # in facebookresearch/Ego-Exo
    published: str  # what the paper reports for the row(s) this recipe produces
    follows: str = ""  # the recipe whose checkpoint this one starts from


RECIPES = [
    Recipe("k400/baseline_slow_r50", "train-student", "configs/ego-exo/k400/SLOW_8x8_R50.yaml",
           "checkpoint for Charades-Ego Slow R50 24.73 mAP"),
    Recipe("k400/egoexo_slow_r50", "train-student", "configs/ego-exo/k400/Ego_Exo_SLOW_8x8_R50.yaml",
           "checkpoint for Charades-Ego Ego-Exo Slow R50 26.64 mAP"),
    Recipe("k400/baseline_slowfast_r50", "train-student", "configs/ego-exo/k400/SLOWFAST_8x8_R50.yaml",
           "checkpoint for Charades-Ego SlowFast R50 26.27 mAP; EPIC-100 66.02 / 50.51"),
    Recipe("k400/egoexo_slowfast_r50", "train-student", "configs/ego-exo/k400/Ego_Exo_SLOWFAST_8x8_R50.yaml",
           "checkpoint for Charades-Ego Ego-Exo SlowFast R50 28.03 mAP; EPIC-100 65.87 / 51.81"),
    Recipe("k400/baseline_slowfast_r101", "train-student", "SLOWFAST_8x8_R50.yaml with depth 101 (no R101 config released)",
           "checkpoint for Charades-Ego SlowFast R101 27.47 mAP; EPIC-100 65.41 / 50.97"),
    Recipe("k400/egoexo_slowfast_r101", "train-student", "Ego_Exo_SLOWFAST_8x8_R50.yaml with depth 101 (no R101 config released)",
           "checkpoint for Charades-Ego Ego-Exo SlowFast R101 28.69 mAP; EPIC-100 67.01 / 52.87"),
    Recipe("charades-ego/finetune_slow_r50", "finetune", "configs/ego-exo/charades-ego/Ego_Exo_SLOW_8x8_R50.yaml",
           "mAP 24.73 from k400/baseline_slow_r50, 26.64 from k400/egoexo_slow_r50", "k400/*_slow_r50"),
    Recipe("charades-ego/finetune_slowfast_r50", "finetune", "configs/ego-exo/charades-ego/Ego_Exo_SLOWFAST_8x8_R50.yaml",
           "mAP 26.27 from k400/baseline_slowfast_r50, 28.03 from k400/egoexo_slowfast_r50", "k400/*_slowfast_r50"),
    Recipe("charades-ego/finetune_slowfast_r101", "finetune", "configs/ego-exo/charades-ego/Ego_Exo_SLOWFAST_8x8_R101.yaml",
           "mAP 27.47 from k400/baseline_slowfast_r101, 28.69 from k400/egoexo_slowfast_r101", "k400/*_slowfast_r101"),
    Recipe("charades-ego/egoexo_star_slowfast_r50", "finetune",
           "configs/ego-exo/charades-ego/Ego_Exo_star_SLOWFAST_8x8_R50.yaml", "Ego-Exo* mAP 29.11",
           "k400/egoexo_slowfast_r50"),
    Recipe("charades-ego/egoexo_star_slowfast_r101", "finetune",
           "configs/ego-exo/charades-ego/Ego_Exo_star_SLOWFAST_8x8_R101.yaml", "Ego-Exo* mAP 30.13",
           "k400/egoexo_slowfast_r101"),
    Recipe("charades-ego/evaluate", "evaluate", "TEST settings of the charades-ego configs",
           "10 x 3 views at 256, max ensemble, mAP"),
    Recipe("epic-100/finetune_slowfast_r50", "finetune", "configs/ego-exo/epic-kitchen-100/Ego_Exo_SLOWFAST_8x8_R50.yaml",
           "verb / noun top-1 66.02 / 50.51 from the baseline, 65.87 / 51.81 from Ego-Exo", "k400/*_slowfast_r50"),
    Recipe("epic-100/finetune_slowfast_r101", "finetune", "configs/ego-exo/epic-kitchen-100/Ego_Exo_SLOWFAST_8x8_R101.yaml",
           "verb / noun top-1 65.41 / 50.97 from the baseline, 67.01 / 52.87 from Ego-Exo", "k400/*_slowfast_r101"),
    Recipe("epic-100/egoexo_star_slowfast_r50", "finetune",
           "configs/ego-exo/epic-kitchen-100/Ego_Exo_star_SLOWFAST_8x8_R50.yaml", "Ego-Exo* verb / noun top-1 66.77 / 52.03",
           "k400/egoexo_slowfast_r50"),
    Recipe("epic-100/egoexo_star_slowfast_r101", "finetune",
           "configs/ego-exo/epic-kitchen-100/Ego_Exo_star_SLOWFAST_8x8_R101.yaml", "Ego-Exo* verb / noun top-1 67.48 / 52.93",
           "k400/egoexo_slowfast_r101"),
    Recipe("epic-100/evaluate", "evaluate", "TEST settings of the epic-kitchen-100 configs",
           "10 x 3 views at 256, sum ensemble, verb / noun / action top-1, top-5"),
]


def recipe_for(name: str) -> Recipe:
    """The recipe called ``name`` (as listed, with or without ``recipe:`` and ``.yaml``)."""
    from pipeline.errors import ConfigError

    name = name.removeprefix("recipe:").removesuffix(".yaml")
    for recipe in RECIPES:
        if recipe.name == name:
            return recipe
    raise ConfigError(f"unknown recipe '{name}'; `pipeline recipes` lists them")


def recipe_path(name: str) -> Path:
    """The YAML file of a recipe."""
    return Path(str(files("pipeline").joinpath("recipes", f"{recipe_for(name).name}.yaml")))
