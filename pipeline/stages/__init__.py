"""The stages and their configs: one registry the CLI, the demo and the recipes share.

``load_stage_config(stage, ...)`` merges a stage's defaults, a YAML file, CLI flags and
``key=value`` overrides and checks them (:func:`pipeline.config.load_config`);
``run_stage(stage, cfg)`` runs it. Stage modules are imported only when used, so
``pipeline --help`` stays instant.
"""
from __future__ import annotations

from typing import Any, Callable

STAGE_NAMES = ("train-teachers", "extract-teachers", "train-student", "finetune", "evaluate")




def stage_spec(stage: str) -> tuple[type, Callable[[], Any], Callable[[Any], Any]]:
    """(config class, defaults factory, run function) of a stage."""
    if stage == "train-teachers":
        from pipeline.stages.train_teachers import TrainTeachersConfig, run_train_teachers

        return TrainTeachersConfig, TrainTeachersConfig, run_train_teachers
    if stage == "extract-teachers":
        from pipeline.stages.extract import ExtractConfig, run_extract

        return ExtractConfig, ExtractConfig, run_extract
    if stage in ("train-student", "finetune"):
        from pipeline.stages.train import TrainConfig, finetune_defaults, pretrain_defaults, run_train

        defaults = pretrain_defaults if stage == "train-student" else finetune_defaults
        return TrainConfig, defaults, lambda cfg: run_train(cfg, stage)
    if stage == "evaluate":
        from pipeline.stages.evaluate import EvaluateConfig, run_evaluate

        return EvaluateConfig, EvaluateConfig, run_evaluate
    raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGE_NAMES)}")


def load_stage_config(stage: str, config: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                      flags: dict[str, object] | None = None, validate: bool = True):
    """Stage defaults <- YAML <- CLI flags <- key=value overrides, type-checked (and validated).

    ``config`` is a file, or ``recipe:<name>`` for one of the paper's recipes (``pipeline recipes``).
    """
    from pipeline.config import load_config, to_dict

    if config is not None and str(config).startswith("recipe:"):
        from pipeline.errors import ConfigError
        from pipeline.recipes import recipe_for, recipe_path

        if recipe_for(config).stage != stage:
            raise ConfigError(f"{config} is a recipe for 'pipeline run {recipe_for(config).stage}', not '{stage}'")
        config = recipe_path(config)
    cls, defaults, _ = stage_spec(stage)
    return load_config(cls, config, overrides, extra=flags or {}, defaults=to_dict(defaults()), validate=validate)


def run_stage(stage: str, cfg):
    """Run a stage on a config from :func:`load_stage_config`."""
    return stage_spec(stage)[2](cfg)
