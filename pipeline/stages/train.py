"""Stage 2 ``train-student`` and stage 3 ``finetune``: one training stage, two sets of defaults.

``train-student`` pre-trains on a third-person manifest, distilling the signals store
(all distillation weights at 0 gives the baseline). ``finetune`` starts from a
checkpoint (``--init``), swaps the action head for the target label space and trains
on egocentric clips.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.errors import ConfigError, PipelineError
from pipeline.stages.common import (build_model, check_manifest_format, clip_refs, load_checkpoint, load_table,
                                    pick_device, prepare_out_dir, progress, require, resolve_sampling,
                                    select_rows)
from student.train import LossWeights, OptimConfig


@dataclass
class ModelConfig:
    backbone: str = "slow_tiny"
    dropout: float = 0.5  # MODEL.DROPOUT_RATE: 0.5 for the baseline and fine-tuning, 0.0 for Ego-Exo pre-training
    # Build the map head; None: when the Interaction-Map loss is on (an unused head would be
    # exported with random weights).
    interaction_maps: bool | None = None
    map_hidden_channels: int | None = None  # None: the backbone's (512 for R50/R101, the release's head); 0: one 1x1x1 conv


@dataclass
class DataConfig:
    """Clip sampling; each key left at None takes the backbone's value (its ``data_config``:
    for the paper's R50/R101 PySlowFast's 8x8 or 32x2 at 30 fps, jitter 256-320, crop 224)."""

    num_frames: int | None = None  # DATA.NUM_FRAMES
    sampling_rate: int | None = None  # DATA.SAMPLING_RATE: frames of a target_fps video between samples
    target_fps: float | None = None  # DATA.TARGET_FPS
    train_jitter_scales: list[int] | None = None  # DATA.TRAIN_JITTER_SCALES [short side min, max]
    crop: int | None = None  # DATA.TRAIN_CROP_SIZE
    test_crop: int | None = None  # DATA.TEST_CROP_SIZE (evaluate's short side and crop)
    # Where the frames fall in the clip: linspace (PySlowFast's video decoder, Kinetics) or
    # stride (its frame-list loaders, Charades-Ego and EPIC); None: linspace.
    frame_spacing: Literal["linspace", "stride"] | None = None
    split: str | None = "train"  # manifest rows used for training (None: all)
    # An HDF5 frame cache (``pipeline data cache-frames``): frames are read from it instead of
    # decoded; clips it does not hold are decoded as without it.
    frame_cache: str | None = None
    view: Literal["all", "ego", "exo"] = "all"  # Charades-Ego: first-person, third-person or both

    def validate(self) -> None:
        for key in ("num_frames", "sampling_rate", "target_fps", "crop", "test_crop"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"data.{key} must be > 0")
        scales = self.train_jitter_scales
        if scales is not None and (len(scales) != 2 or not 0 < scales[0] <= scales[1]):
            raise ValueError("data.train_jitter_scales must be [min, max] short sides with 0 < min <= max")


@dataclass
class TrainConfig:
    manifest: str = ""
    manifest_format: str = "auto"
    classes: str | None = None  # class list file; None: the dataset's shipped list (Kinetics-400, Charades, EPIC-100)
    video_root: str = ""
    out: str = ""
    signals: str | None = None  # signals store from extract-teachers (needed for distillation)
    init: str | None = None  # checkpoint to start from (ours or PySlowFast .pyth)
    device: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)

    def validate(self) -> None:
        require(self, "manifest", "video_root", "out")
        check_manifest_format(self.manifest_format)
        distil = {k: getattr(self.loss, k) for k in ("ego", "object", "hand_map", "object_map")}
        if any(v < 0 for v in distil.values()) or self.loss.action < 0 or self.loss.noun < 0:
            raise ValueError("loss weights must be >= 0")
        if any(distil.values()) and not self.signals:
            used = ", ".join(f"loss.{k}" for k, v in distil.items() if v)
            raise ValueError(f"{used} > 0 needs a signals store: pass --signals STORE (or set them to 0 for the baseline)")
        if (self.loss.hand_map or self.loss.object_map) and self.model.interaction_maps is False:
            raise ValueError("loss.hand_map/object_map > 0 needs model.interaction_maps: true")
        if not 0.0 <= self.model.dropout < 1.0:
            raise ValueError("model.dropout must lie in [0, 1)")


def pretrain_defaults() -> TrainConfig:
    """Ego-Exo pre-training as the release configures it: its loss weights, no dropout."""
    from student.losses import PAPER_WEIGHTS

    cfg = TrainConfig()
    cfg.loss = LossWeights(**{k: float(v) for k, v in PAPER_WEIGHTS.items() if k in LossWeights.__dataclass_fields__})
    cfg.model.dropout = 0.0
    return cfg


def finetune_defaults() -> TrainConfig:
    """Fine-tuning on first-person clips: the action loss alone, dropout 0.5."""
    cfg = TrainConfig()
    cfg.data.view = "ego"
    return cfg


def map_grid(model, sampling) -> tuple[int, int] | None:
    """(H', W') of the interaction-map output for the training crop (one dummy forward);
    its time steps are the Slow pathway's frames, ``sampling.slow_indices``."""
    import torch

    if model.map_head is None:
        return None
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, sampling.num_frames, sampling.crop, sampling.crop))
    t, h, w = (int(x) for x in out["interaction_map"].shape[2:])
    assert t == len(sampling.slow_indices), (t, sampling.slow_indices)
    return h, w


def start_distributed(device: str):
    """(:class:`~student.train.Distributed`, device) of this process. Launched by ``torchrun``
    (WORLD_SIZE > 1) it joins the process group: NCCL on GPUs, one per process (LOCAL_RANK),
    gloo on CPUs. One process: no group, the device as configured."""
    import torch

    from student.train import Distributed

    dist = Distributed.from_env()
    device = pick_device(device)
    if dist.world == 1:
        return dist, device
    if device.startswith("cuda"):
        device = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        # NCCL for the GPU tensors (gradients), gloo for the CPU ones (logged losses, random states)
        torch.distributed.init_process_group("cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo")
    return dist, device


def run_train(cfg: TrainConfig, stage: str = "train-student") -> dict:
    """Train (or fine-tune) a student; writes ``checkpoint.pt``, ``history.json`` and the config to ``out``.

    Under ``torchrun`` (several processes) each trains its part of every global batch of
    ``optim.batch_size`` (so the lr, scaled by the global batch, stays the same) and only
    rank 0 writes files.
    """
    import torch

    from pipeline.io.store import OK, open_store
    from student.dataset import ClipDataset
    from student.train import fit, save_checkpoint

    from student.train import Distributed

    world = Distributed.from_env().world
    if cfg.optim.batch_size % world:
        raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} is the global batch: it must split evenly over "
                          f"the {world} processes torchrun started")
    say = print if Distributed.from_env().main else (lambda *a, **k: None)
    table = load_table(cfg.manifest, cfg.manifest_format, cfg.classes)
    rows = select_rows(table, cfg.data.split, cfg.data.view)
    if not rows:
        raise PipelineError(f"no rows of {cfg.manifest} match split={cfg.data.split!r} view={cfg.data.view!r}")
    if not Path(cfg.video_root).is_dir():
        raise PipelineError(f"video root not found: {cfg.video_root}")

    num_objects = 0
    distil = any((cfg.loss.ego, cfg.loss.object, cfg.loss.hand_map, cfg.loss.object_map))
    maps = (cfg.loss.hand_map > 0 or cfg.loss.object_map > 0) if cfg.model.interaction_maps is None \
        else cfg.model.interaction_maps
    if cfg.signals:
        store = open_store(cfg.signals)
        if list(store.clip_ids()) != [c.clip_id for c in table]:
            raise PipelineError(f"signals store {cfg.signals} was not written for manifest {cfg.manifest} (clip ids differ)")
        status = store.status()
        dropped = [i for i in rows if status[i] != OK]
        if dropped:
            say(f"{stage}: skipping {len(dropped)} clips without teacher signals (failed or pending in the store)")
        rows = [i for i in rows if status[i] == OK]
        if cfg.loss.object and "object/logits" not in store.output_names:
            raise PipelineError(f"signals store {cfg.signals} has no object/logits for the Object-Score loss")
        if cfg.loss.ego and "ego/logits" not in store.output_names:
            raise PipelineError(f"signals store {cfg.signals} has no ego/logits for the Ego-Score loss")
        if cfg.loss.object:
            num_objects = int(store.array("object/logits").shape[-1])
        if (cfg.loss.hand_map or cfg.loss.object_map) and "handobj/boxes" not in store.output_names:
            raise PipelineError(f"signals store {cfg.signals} has no handobj/boxes for the interaction-map loss")

    init = load_checkpoint(cfg.init) if cfg.init else None
    # Only the heads a loss trains are built: an untrained head would travel on as random weights.
    model_args = {
        "backbone": cfg.model.backbone, "num_actions": len(table.classes), "num_objects": num_objects,
        "num_nouns": len(table.noun_classes), "ego_head": cfg.loss.ego > 0, "dropout": cfg.model.dropout,
        "interaction_maps": maps, "map_hidden_channels": cfg.model.map_hidden_channels,
    }
    torch.manual_seed(cfg.optim.seed)  # initial weights follow from the config, not from what ran before
    try:
        model = build_model(model_args)
    except KeyError as e:
        raise ConfigError(f"config key 'model.backbone': {e}") from None
    model_args["map_hidden_channels"] = model.map_head.hidden.out_channels if (
        model.map_head is not None and model.map_head.hidden is not None) else 0
    if init is not None:
        _load_init(model, init, cfg.init)
    sampling = resolve_sampling(cfg.data, model.backbone)

    dist, device = start_distributed(cfg.device)
    out = prepare_out_dir(cfg.out, cfg, stage) if dist.main else Path(cfg.out)
    dist.barrier()
    clips, missing = clip_refs(table, rows, cfg.video_root)
    if missing:
        say(f"{stage}: {len(missing)} videos missing on disk, e.g. {missing[:3]}")
    if not clips:
        raise PipelineError(f"none of the selected clips' videos exist under {cfg.video_root}")
    dataset = ClipDataset(
        clips, len(table.classes), sampling, multilabel=table.multilabel, train=True,
        store_path=cfg.signals if distil else None, map_grid=map_grid(model, sampling), seed=cfg.optim.seed,
        frame_cache=cfg.data.frame_cache,
    )
    from pipeline.config import to_dict

    meta = {"model_args": model_args, "classes": table.classes, "noun_classes": table.noun_classes,
            "multilabel": table.multilabel, "sampling": to_dict(sampling), "config": to_dict(cfg), "stage": stage}
    say(f"{stage}: {len(clips)} clips, {len(table.classes)} classes, backbone {cfg.model.backbone}, "
        f"{sampling.num_frames} frames {sampling.frame_step * 1000:.0f} ms apart, device {device}"
        + (f", {dist.world} processes of {cfg.optim.batch_size // dist.world} clips per step" if dist.world > 1 else ""))
    history = fit(model, dataset, cfg.optim, cfg.loss, out, table.multilabel, device, checkpoint_extra=meta,
                  progress=lambda **kw: progress(**kw), log=say, dist=dist)
    final = out / "checkpoint.pt"
    if dist.main:
        save_checkpoint(final, {"model": model.state_dict(), "history": history, **meta})
        (out / "history.json").write_text(json.dumps(history, indent=1))
    if dist.world > 1:
        dist.barrier()
        torch.distributed.destroy_process_group()
    return {"checkpoint": str(final), "history": history, "clips": len(clips)}


def _load_init(model, init: dict, path: str) -> None:
    """Load our checkpoint or a PySlowFast/Ego-Exo one by name; heads whose shape differs
    (a new label space) keep their fresh initialisation."""
    from student.checkpoints import load_weights

    try:
        report = load_weights(model, init)
    except (KeyError, ValueError, RuntimeError) as e:
        raise PipelineError(f"--init {path}: does not fit this model: {e}") from None
    if report.mismatched:
        print(f"init from {path}: re-initialised {len(report.mismatched)} head tensors whose shape differs "
              f"({', '.join(report.mismatched[:4])})")
