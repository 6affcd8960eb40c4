"""Stage 3b ``pipeline run evaluate``: multi-view testing of a checkpoint; writes metrics JSON."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.errors import PipelineError
from pipeline.stages.common import load_table, pick_device, progress, require


@dataclass
class EvaluateConfig:
    checkpoint: str = ""
    manifest: str = ""
    manifest_format: str = "auto"
    video_root: str = ""
    out: str = ""  # metrics JSON file
    split: str | None = None  # None: every row of the manifest
    view: Literal["all", "ego", "exo"] = "all"
    views: int = 3  # temporal views averaged per clip
    batch_size: int = 16
    num_workers: int = 1
    device: str = "auto"

    def validate(self) -> None:
        require(self, "checkpoint", "manifest", "video_root", "out")
        check_manifest_format(self.manifest_format)
        if self.views < 1:
            raise ValueError("'views' must be at least 1")


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from data_manifests.formats import clip_frame_rate, resolve_video
    from student.dataset import ClipDataset, ClipRef
    from student.train import evaluate_scores, predict

    ckpt = load_checkpoint(cfg.checkpoint)
    if "model_args" not in ckpt:
        raise PipelineError(f"{cfg.checkpoint} is not a checkpoint written by train-student/finetune")
    table = load_table(cfg.manifest, cfg.manifest_format)
    if list(table.classes) != list(ckpt["classes"]):
        raise PipelineError(
            f"{cfg.manifest} has {len(table.classes)} classes that differ from the checkpoint's {len(ckpt['classes'])}; "
            "evaluate on the label space the model was fine-tuned for"
        )
    rows = select_rows(table, cfg.split, cfg.view)
    clips, missing = [], 0
    for i in rows:
        path = resolve_video(table, table[i], cfg.video_root)
        if path is None:
            missing += 1
            continue
        clips.append(ClipRef(str(path), table[i].start, table[i].end, table[i].labels, i,
                             clip_frame_rate(table, table[i], path)))
    if not clips:
        raise PipelineError(f"no videos to evaluate under {cfg.video_root}")
    model = build_model(ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    data = ckpt["config"]["data"]
    dataset = ClipDataset(
        clips, len(table.classes), multilabel=table.multilabel, num_frames=data["num_frames"], fps=data["fps"],
        short_side=data["short_side"], crop=data["crop"], train=False, views=cfg.views,
    )
    device = pick_device(cfg.device)
    scores = predict(model, dataset, cfg.batch_size, cfg.num_workers, device, progress=lambda it, **kw: progress(it, **kw))
    metrics = evaluate_scores(scores, dataset)
    metrics.update({"checkpoint": str(cfg.checkpoint), "manifest": str(cfg.manifest), "views": cfg.views, "missing_videos": missing})
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=1))
    return metrics
