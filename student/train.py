"""The student's training and evaluation loops: build -> optimizer -> schedule -> loop -> eval/checkpoint.

Reads top to bottom. Checkpoints are plain dicts (model, optimizer, epoch, model
args, resolved config, history) written atomically after every epoch; ``fit``
resumes from ``out/last.pt`` when it exists. TensorBoard events go to ``out/tb/``:
every loss term, the lr, clips/s and the data-wait fraction per step (``step/*``), and
the epoch means of the loss terms at each epoch's last step (``epoch/*``, the values of
``history``).
"""
from __future__ import annotations

import errno
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from student.metrics import mean_average_precision, topk_accuracy


@dataclass
class OptimConfig:
    """SGD as PySlowFast runs it (SOLVER.* / BN.* of the Ego-Exo release's configs)."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.1  # SOLVER.BASE_LR for ``base_batch_size`` (or for ``batch_size`` when that is unset)
    base_batch_size: int | None = None  # linear scaling: the lr used is lr * batch_size / base_batch_size
    lr_policy: Literal["cosine", "steps"] = "cosine"  # steps: PySlowFast steps_with_relative_lrs
    steps: list[float] = field(default_factory=list)  # epochs where each of ``lrs`` starts (first 0)
    lrs: list[float] = field(default_factory=list)  # relative lr of each step
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.01  # absolute, at batch base_batch_size (scaled like lr)
    momentum: float = 0.9
    nesterov: bool = True  # SOLVER.NESTEROV (True in every release config)
    weight_decay: float = 1e-4
    bn_weight_decay: float = 0.0  # BN.WEIGHT_DECAY: BatchNorm weights and biases are not decayed
    precise_bn_batches: int = 0  # BN.NUM_BATCHES_PRECISE after every epoch (0: off)
    num_workers: int = 1  # DataLoader decode processes
    seed: int = 0
    bf16: bool = True  # bf16 autocast on CUDA
    # bf16 autocast on a CPU with native bf16 instructions (AMX / AVX512-BF16): a slow_tiny step
    # ran 1.2-1.4x faster on the development Xeon (AMX). Other CPUs run bf16 slower than fp32,
    # so it is off unless asked for, and asked for on such a CPU it is ignored with one line.
    cpu_bf16: bool = False
    # Conv weights and clips in channels-last-3d memory layout. On the 2-core development CPU a
    # slow_tiny training step took 7.4 ms per clip with it and 10.6 without; slowfast_tiny's was
    # several times slower with it (its lateral fusions), so it is off unless asked for.
    channels_last: bool = False
    # Also write ``last.pt`` every this many steps within an epoch (0: at epoch ends only); a run
    # killed mid-epoch then resumes from that step, at the cost of one checkpoint write per interval.
    checkpoint_every_steps: int = 0
    # torch.compile the training forward/backward (inductor). Pays on GPUs over long runs; on the
    # development CPU compiling slow_tiny took about 2 minutes, longer than the demo's pre-training.
    compile: bool = False

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("optim.epochs and optim.batch_size must be at least 1")
        for key in ("lr", "warmup_start_lr", "momentum", "weight_decay", "bn_weight_decay", "warmup_epochs"):
            value = getattr(self, key)
            if not math.isfinite(value) or abs(value) > 1e6:  # past float32 is an overflow inside SGD
                raise ValueError(f"optim.{key} must be a finite number, got {value}")
        if self.lr <= 0:
            raise ValueError("optim.lr must be > 0")
        if self.num_workers < 0 or self.precise_bn_batches < 0:
            raise ValueError("optim.num_workers and optim.precise_bn_batches must be >= 0")
        if self.lr_policy == "steps":
            if not self.steps or self.steps[0] != 0 or len(self.steps) != len(self.lrs):
                raise ValueError("optim.lr_policy 'steps' needs optim.steps starting at 0 and one optim.lrs entry per step")
            if list(self.steps) != sorted(self.steps):
                raise ValueError("optim.steps must increase")
        if self.base_batch_size is not None and self.base_batch_size < 1:
            raise ValueError("optim.base_batch_size must be at least 1")
        if self.checkpoint_every_steps < 0:
            raise ValueError("optim.checkpoint_every_steps must be >= 0")


@dataclass
class LossWeights:
    """Weights of the named loss terms; 0 drops a term (all distillation at 0 = the baseline)."""

    action: float = 1.0
    noun: float = 1.0  # EPIC-100's noun cross-entropy, summed with the verb's (``action``)
    ego: float = 0.0
    object: float = 0.0
    hand_map: float = 0.0
    object_map: float = 0.0
    temperature: float = 1.0


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` so that ``path`` always holds a whole checkpoint: a temporary
    file is written and flushed to disk (fsync), then renamed over ``path`` and the rename
    itself synced. Killed at any point, ``path`` is the old checkpoint or the new one. A full
    disk (or any write error) removes the temporary file, keeps the old checkpoint and raises
    one :class:`~pipeline.errors.PipelineError` that says so."""
    import io

    from pipeline.errors import PipelineError
    from pipeline.io.failpoints import failpoint

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    buffer = io.BytesIO()  # serialised in memory first: a failed file write is then a plain OSError with its errno
    torch.save(state, buffer)
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        failpoint("save_checkpoint:before_replace")
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        kept = f"{path} still holds the previous checkpoint" if path.exists() else f"no checkpoint was written to {path}"
        why = "no space left on the device" if full else f"{e.__class__.__name__}: {e}"
        raise PipelineError(f"could not write checkpoint {path}: {why}; {kept}. "
                            "Free space (or fix the folder) and rerun the same command to resume") from None


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the op: assume not
        return False


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The torch seed of one epoch (dropout and anything else drawing from torch's global
    generator), so an epoch replays the same whether the run started at epoch 0 or resumed;
    under DDP each process (``rank``) draws its own."""
    return int(np.random.SeedSequence([seed, epoch] + ([rank] if rank else [])).generate_state(1)[0])


@dataclass
class Distributed:
    """This process's place in a DDP run (``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Distributed":
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    def mean(self, values: list[float]) -> list[float]:
        """The mean of each value over the processes (the values themselves in one process)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return (t / self.world).tolist()

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def lr_at(epoch_float: float, cfg: OptimConfig) -> float:
    """The learning rate at a fractional epoch, as PySlowFast's ``get_lr_at_epoch`` computes it.

    Cosine: ``lr * (cos(pi * e / epochs) + 1) / 2`` (the release's fork has no end lr);
    steps: ``lr * lrs[i]`` for the last step ``i`` started. During warm-up the lr rises
    linearly from ``warmup_start_lr`` to the policy's value at the end of warm-up (not to
    the base lr). ``lr`` and ``warmup_start_lr`` are scaled by ``batch_size / base_batch_size``.
    """
    scale = cfg.batch_size / cfg.base_batch_size if cfg.base_batch_size else 1.0
    base = cfg.lr * scale

    def policy(e: float) -> float:
        if cfg.lr_policy == "cosine":
            return base * 0.5 * (math.cos(math.pi * e / cfg.epochs) + 1.0)
        started = [i for i, step in enumerate(cfg.steps) if e >= step]
        return base * cfg.lrs[started[-1] if started else 0]

    if epoch_float < cfg.warmup_epochs:
        start, end = cfg.warmup_start_lr * scale, policy(cfg.warmup_epochs)
        return start + (end - start) * epoch_float / cfg.warmup_epochs
    return policy(epoch_float)


def param_groups(model: torch.nn.Module, cfg: OptimConfig) -> list[dict]:
    """Two SGD groups: BatchNorm parameters at ``bn_weight_decay``, the rest at ``weight_decay``."""
    norm = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)
            for p in m.parameters(recurse=False)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in norm], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if id(p) in norm], "weight_decay": cfg.bn_weight_decay},
    ]


def train_loader(dataset, cfg: OptimConfig, dist: Distributed | None = None) -> torch.utils.data.DataLoader:
    """The training DataLoader: an :class:`~student.dataset.EpochSampler` hands each worker
    ``(epoch, index)``, so augmentation changes every epoch even with persistent workers.
    Under DDP each process loads its ``batch_size / world`` part of every global batch."""
    from student.dataset import EpochSampler

    dist = dist or Distributed()
    if dist.world > 1:
        sampler = EpochSampler(len(dataset), cfg.seed, rank=dist.rank, world=dist.world, batch_size=cfg.batch_size)
        return torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch_size // dist.world, sampler=sampler, num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0, generator=torch.Generator().manual_seed(cfg.seed),
            pin_memory=torch.cuda.is_available(),
        )

    # Its own generator for the workers' base seed: drawn from torch's global one, it would shift
    # the dropout draws of whichever epoch first starts the workers (epoch 0, or a resumed one).
    return torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=EpochSampler(len(dataset), cfg.seed),
        drop_last=len(dataset) > cfg.batch_size, num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0, generator=torch.Generator().manual_seed(cfg.seed),
        pin_memory=torch.cuda.is_available(),
    )


def precise_bn(model: torch.nn.Module, loader, num_batches: int, device: str) -> None:
    """Recompute BatchNorm statistics as exact averages over ``num_batches`` training batches
    (PySlowFast's precise BN; torch's ``update_bn`` does the averaging)."""
    from itertools import islice

    from torch.optim.swa_utils import update_bn

    was_training = model.training
    update_bn((b["video"] for b in islice(loader, num_batches)), model, device=torch.device(device))
    model.train(was_training)


def log_step(tb, step: int, values: dict[str, float], lr: float, clips: int, wait: float, seconds: float) -> None:
    """One training step into TensorBoard: each loss term, the lr, clips/s, and the fraction of
    the step spent waiting for the loader (near 1: decoding, not the model, sets the pace)."""
    for k, v in values.items():
        tb.add_scalar(f"step/{k}", v, step)
    tb.add_scalar("step/lr", lr, step)
    tb.add_scalar("step/clips_per_s", clips / max(seconds, 1e-9), step)
    tb.add_scalar("step/data_wait_fraction", wait / max(seconds, 1e-9), step)


PRECISE_BN_EPOCH = 1 << 20  # epoch numbers from here on draw the precise-BN batches
TARGET_KEYS = ("noun", "ego", "object", "interaction_map", "interaction_map_valid")


def fit(
    model: torch.nn.Module,
    train_set,
    cfg: OptimConfig,
    weights: LossWeights,
    out: Path,
    multilabel: bool,
    device: str = "cpu",
    checkpoint_extra: dict | None = None,
    log: Callable[[str], None] = print,
    progress: Callable | None = None,
    dist: Distributed | None = None,
) -> list[dict]:
    """Train ``model`` on ``train_set``; returns per-epoch history (mean of each loss term).

    Under DDP (``dist.world`` > 1, process group already initialised) every process trains its
    part of each global batch of ``cfg.batch_size``; gradients are averaged, the logged losses
    are means over the processes, and only rank 0 writes checkpoints and TensorBoard events.

    Resumes exactly from ``out/last.pt``: it holds the model, the optimizer, the epochs and
    steps done, the current epoch's running loss sums and torch's random state, so a run
    killed anywhere and rerun reaches the same weights as one that was never stopped (the
    clips and their augmentation follow from the seed, the epoch and the clip alone).
    """
    from student.losses import egoexo_losses

    dist = dist or Distributed()
    layout = torch.channels_last_3d if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)
    if cfg.compile:
        net = torch.compile(net)  # checkpoints still hold ``model``'s names (no _orig_mod. prefix)
    if dist.world > 1 and len(train_set) < cfg.batch_size:
        from pipeline.errors import ConfigError

        raise ConfigError(f"{len(train_set)} clips do not make one global batch of optim.batch_size "
                          f"{cfg.batch_size}: lower it (it is split over the {dist.world} processes)")
    loader = train_loader(train_set, cfg, dist)
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=lr_at(0.0, cfg), momentum=cfg.momentum,
                                nesterov=cfg.nesterov)
    w = {k: v for k, v in asdict(weights).items() if k != "temperature"}
    steps_per_epoch = max(1, len(loader))
    history: list[dict] = []
    start_epoch, start_step, resumed = 0, 0, None
    last = out / "last.pt"
    if last.exists():  # resume
        from pipeline.errors import PipelineError

        try:
            resumed = torch.load(last, map_location="cpu", weights_only=True)
            model.load_state_dict(resumed["model"])
            optimizer.load_state_dict(resumed["optimizer"])
            start_epoch, history = resumed["epoch"], resumed["history"]
        except Exception as e:  # truncated, foreign or another model's: one line, not a traceback
            raise PipelineError(f"cannot resume from {last} ({e.__class__.__name__}: {str(e).splitlines()[0][:200]}); "
                                "it was not written by this run's training. Delete it to start this run over") from None
        start_step = resumed.get("step", 0)
        if dist.main:
            log(f"resuming from {last} at epoch {start_epoch + 1}" + (f", step {start_step + 1}" if start_step else ""))
    autocast = cfg.bf16 if device.startswith("cuda") else cfg.cpu_bf16 and cpu_has_bf16()
    if cfg.cpu_bf16 and not device.startswith("cuda") and not autocast and dist.main:
        log("optim.cpu_bf16: this CPU has no native bf16 (AMX / AVX512-BF16); training in fp32")
    precision = "bf16" if autocast else "fp32"
    if resumed is not None and resumed.get("precision", precision) != precision and dist.main:
        log(f"{last} was trained in {resumed['precision']} and goes on in {precision} here: the weights will "
            "differ from an uninterrupted run's")
    # A resumed run drops events logged after its checkpoint, so no curve has two values per step.
    first_step = start_epoch * steps_per_epoch + start_step
    tb = SummaryWriter(out / "tb", purge_step=first_step if first_step else None) if dist.main else None

    def checkpoint(epoch_done: int, step_done: int, sums: dict, n: int) -> None:
        if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
            from pipeline.errors import PipelineError  # e.g. precise BN over clips that overflow

            raise PipelineError(f"non-finite weights or BatchNorm statistics at the end of epoch {epoch_done}"
                                f"{f', step {step_done}' if step_done else ''}: not saved; {last} keeps the last "
                                "finite ones")
        cuda = torch.cuda.get_rng_state(torch.device(device)) if device.startswith("cuda") else None
        ranks = dist.gather((torch.get_rng_state(), cuda))  # every process's random state, for a mid-epoch resume
        if dist.main:
            save_checkpoint(last, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch_done,
                "step": step_done, "epoch_sums": dict(sums), "epoch_steps": n, "history": history,
                "rng": ranks[0][0], "rng_ranks": [r[0] for r in ranks], "precision": precision,
                "cuda_rng_ranks": [r[1] for r in ranks if r[1] is not None],
                **(checkpoint_extra or {}),
            })
        dist.barrier()  # no process runs ahead of a checkpoint the others may resume from

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        torch.manual_seed(epoch_seed(cfg.seed, epoch, dist.rank))
        skip = start_step if epoch == start_epoch else 0
        sums: dict[str, float] = {}
        n = 0
        if skip:  # mid-epoch: the steps done, their loss sums, and the random state after them
            sums, n = dict(resumed["epoch_sums"]), int(resumed["epoch_steps"])
            ranks = resumed.get("rng_ranks") or [resumed["rng"]]
            if len(ranks) != dist.world:
                from pipeline.errors import PipelineError

                raise PipelineError(f"{last} was written mid-epoch by {len(ranks)} processes; resume it with "
                                    f"{len(ranks)} (torchrun --nproc_per_node), or from an epoch's end")
            torch.set_rng_state(ranks[dist.rank])
            cuda_ranks = resumed.get("cuda_rng_ranks") or []
            if len(cuda_ranks) == dist.world and device.startswith("cuda"):
                torch.cuda.set_rng_state(cuda_ranks[dist.rank], torch.device(device))
        loader.sampler.set_epoch(epoch, start=skip * cfg.batch_size)
        t_start = time.time()
        bar = progress(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False) \
            if progress and dist.main else None
        t_ready = time.perf_counter()  # the previous step's end: from here on the step waits for the loader
        for step, batch in enumerate(loader, start=skip):
            t_batch = time.perf_counter()
            lr = lr_at(epoch + step / steps_per_epoch, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            batch["video"] = batch["video"].contiguous(memory_format=layout)
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
                outputs = net(batch["video"])
            outputs = {k: v.float() for k, v in outputs.items()}
            targets = {"action": batch["label"], **{k: batch[k] for k in TARGET_KEYS if k in batch}}
            terms = egoexo_losses(outputs, targets, w, temperature=weights.temperature, multilabel=multilabel)
            loss = sum(terms.values())
            # means over the processes: every process sees the same values, so all stop together
            means = dist.mean([float(loss.detach()), *(float(v.detach()) for v in terms.values())])
            values = dict(zip(["loss", *terms], means))
            if not math.isfinite(values["loss"]):
                raise_non_finite(terms, epoch, step, batch, train_set, last=last)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # A finite loss can still give inf/NaN gradients, or an lr that sends the weights to
            # inf: neither is ever stepped into, so no checkpoint can hold non-finite weights.
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
                raise_non_finite(terms, epoch, step, batch, train_set, what="gradient", last=last)
            optimizer.step()
            # weights and BatchNorm statistics (huge activations overflow those first), in one norm
            state = [t for t in model.state_dict().values() if t.is_floating_point()]
            if not torch.isfinite(torch.nn.utils.get_total_norm(state)):
                raise_non_finite(terms, epoch, step, batch, train_set, what="weights after the step", last=last)
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            t_done = time.perf_counter()
            if tb is not None:
                log_step(tb, epoch * steps_per_epoch + step, values, lr, len(batch["video"]) * dist.world,
                         wait=t_batch - t_ready, seconds=t_done - t_ready)
            if cfg.checkpoint_every_steps and (step + 1) % cfg.checkpoint_every_steps == 0 \
                    and step + 1 < steps_per_epoch:
                if tb is not None:
                    tb.flush()
                checkpoint(epoch, step + 1, sums, n)
            t_ready = time.perf_counter()
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
        if bar:
            bar.close()
        if cfg.precise_bn_batches:
            # Other clips and augmentation than the epoch just trained, as PySlowFast's separate
            # precise-BN loader draws them: the sampler's epoch number is moved out of range.
            loader.sampler.set_epoch(PRECISE_BN_EPOCH + epoch)
            precise_bn(model, loader, cfg.precise_bn_batches, device)
        record = {"epoch": epoch + 1, "seconds": round(time.time() - t_start, 2), **{k: v / max(n, 1) for k, v in sums.items()}}
        history.append(record)
        if tb is not None:
            for k, v in record.items():  # at the epoch's last step, which a resume from this epoch keeps
                if k.startswith("loss"):
                    tb.add_scalar(f"epoch/{k}", v, (epoch + 1) * steps_per_epoch - 1)
            tb.flush()  # every epoch on disk, as the checkpoint is
        if dist.main:
            log("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        checkpoint(epoch + 1, 0, {}, 0)
    if tb is not None:
        tb.close()
    return history


def raise_non_finite(terms: dict, epoch: int, step: int, batch: dict, dataset, what: str = "loss",
                     last: Path | None = None) -> None:
    """Stop training on a NaN/inf loss, gradient or weight, naming it, the step and the batch's
    clips; the last checkpoint is left as it was (saying where it stands)."""
    from pipeline.errors import PipelineError

    bad = [k for k, v in terms.items() if not torch.isfinite(v)] or ["in another DDP process"]
    clips = getattr(dataset, "clips", None)
    ids = [Path(clips[int(i)].path).stem if clips is not None else str(int(i)) for i in batch.get("index", [])]
    kept = "no checkpoint was written yet"
    if last is not None and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        at = f"end of epoch {state['epoch']}" if not state.get("step") else \
            f"epoch {state['epoch'] + 1}, after step {state['step']}"
        kept = f"{last} ({at}) is kept, with finite weights"
    where = f"({', '.join(bad)})" if what == "loss" else ""
    raise PipelineError(
        f"non-finite {what} {where} at epoch {epoch + 1}, step {step + 1}; the batch's clips: {', '.join(ids[:16])}. "
        f"{kept}. Check these clips' videos and signals; to try a lower optim.lr, train into a new --out with "
        f"init={last if last is not None else 'LAST.pt'} (this folder's config is fixed)".replace("  ", " "))


@torch.no_grad()
def predict(model: torch.nn.Module, dataset, batch_size: int = 16, num_workers: int = 1, device: str = "cpu",
            ensemble: Literal["max", "mean", "sum"] = "sum", window: tuple[int, int] = (7, 7),
            progress=None) -> dict[str, np.ndarray]:
    """Per-clip scores over the dataset's views (temporal x spatial), combined by ``ensemble``.

    Each view's probabilities come from ``model.forward_test`` (the head applied over
    ``window``-sized positions of the final grid, as PySlowFast tests), combined as its
    ``TestMeter`` does: ``sum`` (its default), ``mean`` or ``max`` (Charades-Ego).
    Returns ``{"action": [N, A]}``, plus ``"noun"`` for a model with a noun head (EPIC-100).
    """
    model.eval().to(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    n_clips = len(dataset.clips)
    combined: dict[str, np.ndarray] = {}
    counts = np.zeros(n_clips)
    it = progress(loader, desc="evaluate", leave=False) if progress else loader
    for batch in it:
        outputs = model.forward_test(batch["video"].to(device), window, dataset.multilabel)
        idx = batch["index"].numpy()
        np.add.at(counts, idx, 1)
        for head, probs in outputs.items():
            probs = probs.float().cpu().numpy()
            if head not in combined:
                combined[head] = np.full((n_clips, probs.shape[1]), -np.inf if ensemble == "max" else 0.0)
            (np.maximum if ensemble == "max" else np.add).at(combined[head], idx, probs)
    if ensemble == "mean":
        combined = {k: v / counts[:, None] for k, v in combined.items()}
    return combined


def evaluate_scores(scores: dict[str, np.ndarray], dataset) -> dict:
    """Metrics for a dataset's clips: mAP over the classes with a positive (multi-label);
    top-1/top-5 (single-label); for EPIC-100 also noun and action top-1/top-5, an action
    counted right at k when its verb is in the verb top-k and its noun in the noun top-k
    (the release's ``multitask_topks_correct``)."""
    from student.metrics import chance_map, topk_hits

    clips = dataset.clips
    if dataset.multilabel:
        targets = np.stack([dataset._label(c).numpy() for c in clips])
        return {"mAP": mean_average_precision(scores["action"], targets), "chance_mAP": chance_map(targets),
                "clips": len(targets)}
    labels = np.array([c.labels[0] for c in clips])
    out = {"top1": topk_accuracy(scores["action"], labels, 1), "top5": topk_accuracy(scores["action"], labels, 5),
           "chance_top1": float(np.bincount(labels).max() / len(labels)), "clips": len(labels)}
    if "noun" in scores:
        nouns = np.array([c.noun for c in clips])
        for k in (1, 5):
            verb_hit = topk_hits(scores["action"], labels, k)
            noun_hit = topk_hits(scores["noun"], nouns, k)
            out[f"noun_top{k}"] = float(noun_hit.mean())
            out[f"action_top{k}"] = float((verb_hit & noun_hit).mean())
    return out
