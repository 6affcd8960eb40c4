"""Stage 3b ``pipeline run evaluate``: multi-view testing of a checkpoint; writes metrics JSON and
the per-clip scores, so metrics can be recomputed without the model."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.errors import PipelineError
from pipeline.stages.common import (check_manifest_format, clip_refs, load_checkpoint, load_table,
                                    pick_device, progress, require, resolve_sampling, select_rows)


@dataclass
class EvaluateConfig:
    checkpoint: str = ""  # ours (.pt), or a released PySlowFast / Ego-Exo .pyth or Caffe2 .pkl
    arch: str | None = None  # the backbone of a released checkpoint; None: found from its tensor shapes
    manifest: str = ""
    manifest_format: str = "auto"
    classes: str | None = None  # class list file; None: the dataset's shipped list
    video_root: str = ""
    out: str = ""  # metrics JSON file; the per-clip scores go next to it (<out stem>.predictions.npz)
    split: str | None = None  # None: every row of the manifest
    view: Literal["all", "ego", "exo"] = "all"
    temporal_views: int = 10  # TEST.NUM_ENSEMBLE_VIEWS
    spatial_crops: Literal[1, 3] = 3  # TEST.NUM_SPATIAL_CROPS: left/centre/right along the long side
    short_side: int | None = None  # TEST_CROP_SIZE: short side and crop; None: the checkpoint's
    # Clip timing, None: the checkpoint's (a released checkpoint: its backbone's, PySlowFast's 30 fps
    # linspace); the release tests Charades-Ego's 24 fps and EPIC's 60 fps frames with stride.
    target_fps: float | None = None
    frame_spacing: Literal["linspace", "stride"] | None = None
    ensemble: Literal["auto", "max", "mean", "sum"] = "auto"  # auto: max for multi-label (Charades-Ego), else sum
    frame_cache: str | None = None  # an HDF5 frame cache (pipeline data cache-frames); clips it lacks are decoded
    batch_size: int = 16
    num_workers: int = 1
    device: str = "auto"

    def validate(self) -> None:
        require(self, "checkpoint", "manifest", "video_root", "out")
        check_manifest_format(self.manifest_format)
        if self.temporal_views < 1:
            raise ValueError("'temporal_views' must be at least 1")
        if self.short_side is not None and self.short_side < 1:
            raise ValueError("'short_side' must be at least 1")


def _class_difference(have: list[str], want: list[str]) -> str:
    """What differs between two class lists, in a few words."""
    only_have, only_want = [c for c in have if c not in set(want)], [c for c in want if c not in set(have)]
    parts = []
    if len(have) != len(want):
        parts.append(f"{len(have)} vs {len(want)} classes")
    if only_have:
        parts.append(f"only in the manifest's list: {', '.join(map(repr, only_have[:3]))}" + (" ..." if len(only_have) > 3 else ""))
    if only_want:
        parts.append(f"only in the checkpoint's: {', '.join(map(repr, only_want[:3]))}" + (" ..." if len(only_want) > 3 else ""))
    if not parts:
        i = next(i for i, (a, b) in enumerate(zip(have, want)) if a != b)
        parts.append(f"same classes in another order (index {i}: {have[i]!r} vs {want[i]!r})")
    return "; ".join(parts)


def run_evaluate(cfg: EvaluateConfig) -> dict:
    import numpy as np

    from student.dataset import ClipDataset, Sampling
    from student.train import evaluate_scores, predict

    from student.checkpoints import load_student

    model, ckpt = load_student(load_checkpoint(cfg.checkpoint), cfg.arch)
    table = load_table(cfg.manifest, cfg.manifest_format, cfg.classes)
    if "classes" in ckpt and list(table.classes) != list(ckpt["classes"]):
        raise PipelineError(
            f"the classes of {cfg.manifest} differ from the checkpoint's ({_class_difference(table.classes, ckpt['classes'])}); "
            "evaluate on the label space the model was trained for (set 'classes' to its class list)"
        )
    # A released checkpoint names no classes: its head must match the manifest's class list.
    heads = {"action": (ckpt["model_args"]["num_actions"], len(table.classes)),
             "noun": (ckpt["model_args"].get("num_nouns", 0), len(table.noun_classes))}
    for head, (have, want) in heads.items():
        if have != want:
            raise PipelineError(f"{cfg.checkpoint} has a {have}-way {head} head but {cfg.manifest} has {want} "
                                f"{head} classes; evaluate on the label space the model was trained for")
    rows = select_rows(table, cfg.split, cfg.view)
    clips, missing = clip_refs(table, rows, cfg.video_root)
    if not clips:
        raise PipelineError(f"no videos to evaluate under {cfg.video_root}")
    # A released checkpoint carries no sampling of ours: its backbone's (PySlowFast's) applies.
    sampling = Sampling.from_dict(ckpt["sampling"]) if "sampling" in ckpt else resolve_sampling(None, model.backbone)
    overrides = {"test_short_side": cfg.short_side, "target_fps": cfg.target_fps, "spacing": cfg.frame_spacing}
    sampling = dataclasses.replace(sampling, **{k: v for k, v in overrides.items() if v is not None})
    dataset = ClipDataset(clips, len(table.classes), sampling, multilabel=table.multilabel, train=False,
                          temporal_views=cfg.temporal_views, spatial_crops=cfg.spatial_crops, frame_cache=cfg.frame_cache)
    ensemble = cfg.ensemble if cfg.ensemble != "auto" else ("max" if table.multilabel else "sum")
    device = pick_device(cfg.device)
    # PySlowFast pools the test grid in windows of the training crop's grid (224 / 32 = 7).
    window = (max(1, sampling.crop // model.backbone.final_stride),) * 2
    scores = predict(model, dataset, cfg.batch_size, cfg.num_workers, device, ensemble, window,
                     progress=lambda it, **kw: progress(it, **kw))
    metrics = evaluate_scores(scores, dataset)
    metrics.update({"checkpoint": str(cfg.checkpoint), "manifest": str(cfg.manifest), "missing_videos": len(missing),
                    "views": f"{cfg.temporal_views} temporal x {cfg.spatial_crops} spatial at short side "
                             f"{sampling.test_short_side}", "ensemble": ensemble})
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    predictions = out.with_suffix(".predictions.npz")
    labels = (np.stack([dataset._label(c).numpy() for c in clips]) if table.multilabel
              else np.array([c.labels[0] if c.labels else -1 for c in clips]))
    np.savez_compressed(predictions, clip_id=np.array([table[c.row].clip_id for c in clips]), labels=labels,
                        classes=np.array(table.classes),
                        **{f"scores_{k}": v for k, v in scores.items()},
                        **({"nouns": np.array([c.noun for c in clips])} if "noun" in scores else {}))
    metrics["predictions"] = str(predictions)
    out.write_text(json.dumps(metrics, indent=1))
    return metrics
