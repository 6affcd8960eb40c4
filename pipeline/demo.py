"""``pipeline demo``: the paper's experiment in miniature, every stage through its real config.

Each stage's config is written to ``WORKDIR/configs/<stage>[.<variant>].yaml`` first; the
teachers, students, fine-tunes and evaluations then run as ``pipeline run <stage> --config``
processes, ``--jobs`` at a time (``pipeline.parallel``), so any step can be rerun by hand.
The world, the teachers and the signals stores are made once; every row
of the table (scratch, the exo baseline, Ego-Exo, and with ``--ablations`` Ego-Exo* and
the one-signal variants) is pre-trained, fine-tuned and evaluated once per seed. Numbers
are reported as they come out, with their spread over seeds.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.config import dump_config
from pipeline.errors import PipelineError

# Demo-sized settings (2-core CPU), the same for every row; the student's width (slow_tiny) was
# chosen for the baseline's pre-training target (README, demo section).
# 30 epochs: what the 10 minutes of `make demo` allow. The student's loss sits near chance for its
# first 10-15 epochs (lr 0.025-0.2, warm-up 1 or 5 epochs, batch 8 or 16 all did); 40-45 epochs
# helped in most probes (README, demo section) but cost more time than the demo has.
PRETRAIN_EPOCHS = 30
FINETUNE_EPOCHS = 12
# One epoch of linear warm-up from a tenth of the lr: a few hundred steps from scratch need it.
# Channels-last: slow_tiny's step is 1.4x faster with it on a CPU; bf16 autocast on a CPU with
# native bf16 (AMX, as the development Xeon has) 1.2-1.4x more; elsewhere it trains in fp32.
DEMO_OPTIM = {"optim.lr": 0.1, "optim.warmup_epochs": 1.0, "optim.warmup_start_lr": 0.01, "optim.channels_last": True,
              "optim.cpu_bf16": True}
# The teachers' epochs on this world (the train-teachers defaults are 12 / 10 / 10): held out,
# ego/exo accuracy 0.95, object 0.99, hands AP50 0.85, objects AP50 0.82, contact 0.89 in 199 s,
# against 0.92 / 1.00 / 0.89 / 0.84 / 0.88 in 314 s with the defaults (one run each on the 2-core
# machine; another job shared its cores during the second).
TEACHER_EPOCHS = {"ego.epochs": 6, "object.epochs": 4, "handobj.epochs": 7}
# The Kinetics-like clips are decoded once into a frame cache at the top of slow_tiny's train
# jitter (73-91): pre-training reads each clip 30 times.
FRAME_CACHE_SHORT_SIDE = 91
# ``--quick``: every stage on a world an eighth of the size, one epoch each (minutes; a check
# that everything runs, not an experiment: its numbers mean nothing).
QUICK = {"world_scale": 0.12, "pretrain_epochs": 1, "finetune_epochs": 1,
         "teacher_epochs": {"ego.epochs": 1, "object.epochs": 1, "handobj.epochs": 1, "handobj.frame_stride": 4}}
NO_DISTILLATION = {"loss.ego": 0.0, "loss.object": 0.0, "loss.hand_map": 0.0, "loss.object_map": 0.0}

# Pre-training variants: the release's baseline (cross-entropy alone at weight 1, dropout 0.5)
# and Ego-Exo (its loss weights: CE 0.5 + the signals, no dropout), and the ablations keeping
# one signal of Ego-Exo's.
PRETRAIN = {
    "baseline": {**NO_DISTILLATION, "loss.action": 1.0, "model.dropout": 0.5},
    "egoexo": {},
    "ego_only": {**NO_DISTILLATION, "loss.ego": 0.1},
    "object_only": {**NO_DISTILLATION, "loss.object": 0.5},
    "maps_only": {**NO_DISTILLATION, "loss.hand_map": 1.0, "loss.object_map": 1.0},
}
# Table rows: the pre-trained start each fine-tunes from (None: scratch) and whether it keeps
# the interaction-map loss in fine-tuning (Ego-Exo*, the release's Charades-Ego weights 0.1 / 0.1).
ROWS = {
    "scratch": (None, False),
    "baseline": ("baseline", False),
    "egoexo": ("egoexo", False),
    "egoexo_star": ("egoexo", True),
    "ego_only": ("ego_only", False),
    "object_only": ("object_only", False),
    "maps_only": ("maps_only", False),
}
DEFAULT_ROWS = ("scratch", "baseline", "egoexo")
ROW_NAMES = {"scratch": "scratch (no pre-training)", "baseline": "exo-pretrained baseline", "egoexo": "Ego-Exo",
             "egoexo_star": "Ego-Exo*", "ego_only": "Ego-Score only", "object_only": "Object-Score only",
             "maps_only": "Interaction-Map only"}


def _stale_students(wd: Path) -> list[Path]:
    """Checkpoints under ``students/`` and ``finetuned/`` whose backbone tensors do not fit today's
    ``slow_tiny`` (a workdir of an earlier demo student): resuming them would fail mid-run."""
    paths = sorted([*wd.glob("students/*/*.pt"), *wd.glob("finetuned/*/*.pt")])
    if not paths:
        return []
    import torch

    from student.checkpoints import _backbone_shapes

    want = _backbone_shapes("slow_tiny")
    stale = []
    for path in paths:
        try:
            model = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("model", {})
        except Exception:  # unreadable or not ours: the stage's own resume check says so
            continue
        if any(want.get(k, tuple(v.shape)) != tuple(v.shape) for k, v in model.items() if k.startswith("backbone.")):
            stale.append(path)
    return stale


def run_demo(workdir: str | Path, seed: int = 0, workers: int = 2, seeds: int = 1, ablations: bool = False,
             jobs: int = 2, quick: bool = False) -> dict:
    """The whole pipeline on the synthetic world; ``seeds`` students per row (seeds ``seed``,
    ``seed + 1``, ...), the ablation rows with ``ablations``. Teachers, students and fine-tunes run
    ``jobs`` at a time, each as ``pipeline run STAGE --config`` in its own process (logs in
    ``WORKDIR/logs``). ``quick``: the tiny world and one epoch of everything (``QUICK``).
    Returns the summary it writes."""
    from data_manifests.demo_world import make_demo
    from pipeline.io.frame_cache import cache_manifest
    from pipeline.parallel import Command, run_chains
    from pipeline.stages import load_stage_config
    from pipeline.stages.extract import run_extract

    wd = Path(workdir).resolve()
    configs = wd / "configs"
    timings: dict[str, float] = {}
    t_all = time.time()
    rows = list(ROWS) if ablations else list(DEFAULT_ROWS)
    seed_list = list(range(seed, seed + seeds))
    pretrain_epochs, finetune_epochs, teacher_epochs, scale = (
        (QUICK["pretrain_epochs"], QUICK["finetune_epochs"], QUICK["teacher_epochs"], QUICK["world_scale"]) if quick
        else (PRETRAIN_EPOCHS, FINETUNE_EPOCHS, TEACHER_EPOCHS, 1.0))
    reused: list[str] = []  # steps finished by an earlier run: their time here is a resume's, not a training's

    def reuses(label: str, done: Path) -> None:
        if done.exists():
            reused.append(label)

    def step(name: str):
        print(f"\n== {name} ==", flush=True)
        return time.time()

    def config_path(stage: str, variant: str | None) -> Path:
        return configs / (f"{stage}.{variant}.yaml" if variant else f"{stage}.yaml")

    def stage_config(stage: str, variant: str | None, values: dict):
        path = config_path(stage, variant)
        flat = [f"{k}={json.dumps(v)}" for k, v in values.items()]
        cfg = load_stage_config(stage, None, flat, {})
        dump_config(cfg, path)
        return cfg

    world = wd / "world"
    if (world / "demo_world.json").exists():  # checked before anything is written
        made = json.loads((world / "demo_world.json").read_text())
        if (made.get("seed"), made.get("scale")) != (seed, scale):
            raise PipelineError(f"{wd} holds a demo world of seed {made.get('seed')}, scale {made.get('scale')}; this run "
                                f"wants seed {seed}, scale {scale} ({'--quick' if quick else 'full size'}): give it "
                                "its own --workdir")
    if (wd / "teachers" / "teachers.json").exists():
        raise PipelineError(f"{wd} was made by an earlier version of the demo (its teachers in one folder, not "
                            "teachers/<kind>/); give the demo a new --workdir")
    stale = _stale_students(wd)
    if stale:
        raise PipelineError(f"{wd} holds students of an earlier demo student: {stale[0].relative_to(wd)} does not fit "
                            "slow_tiny (12 stem channels since the demo narrowed it from 16); delete "
                            f"{wd / 'students'} and {wd / 'finetuned'}, or give the demo a new --workdir")
    t = step("1/5 make the synthetic world")
    if not (world / "demo_world.json").exists():
        try:
            make_demo(world, seed=seed, scale=scale)
        except FileExistsError as e:  # an interrupted world of another seed or size
            raise PipelineError(f"{e}; or give the demo another --workdir") from None
    else:
        print(f"world exists at {world}; reusing it")
        reused.append("make_world")
    kin_csv = world / "kinetics" / "kinetics_demo.csv"
    kin_videos = world / "kinetics" / "videos"
    frame_cache = wd / "kinetics-frames.h5"
    cached = cache_manifest(kin_csv, kin_videos, frame_cache, FRAME_CACHE_SHORT_SIDE, classes=str(world / "kinetics" / "classes.txt"))
    print(f"frame cache {frame_cache}: {cached['entries']} clips ({cached['added']} added)")
    timings["make_world"] = time.time() - t
    ego_train_csv = world / "charades_ego" / "CharadesEgo_v1_train.csv"
    ego_test_csv = world / "charades_ego" / "CharadesEgo_v1_test.csv"
    ego_videos = world / "charades_ego" / "videos"
    # The demo's label sets are its own, so every stage names their class lists.
    kin_classes = str(world / "kinetics" / "classes.txt")
    ego_classes = str(world / "charades_ego" / "Charades_v1_classes.txt")
    views = {"temporal_views": 3, "spatial_crops": 3}  # the release tests 10 x 3; 3 x 3 keeps the demo short
    store = wd / "signals" / "kinetics.zarr"
    ego_store = wd / "signals" / "charades_ego_train.zarr"

    def finetune_chain(row: str, s: int) -> list[Command]:
        """Fine-tune ``row``'s seed-``s`` student on the first-person clips, then evaluate it."""
        start, star = ROWS[row]
        name = f"{row}-s{s}"
        values = {"manifest": str(ego_train_csv), "classes": ego_classes, "video_root": str(ego_videos),
                  "out": str(wd / "finetuned" / name), "optim.epochs": finetune_epochs, "optim.seed": s,
                  "data.view": "ego", "data.split": None, **DEMO_OPTIM}
        if start:
            values["init"] = str(wd / "students" / f"{start}-s{s}" / "checkpoint.pt")
        if star:
            values.update({"signals": str(ego_store), "loss.hand_map": 0.1, "loss.object_map": 0.1})
        stage_config("finetune", name, values)
        stage_config("evaluate", name, {
            "checkpoint": str(wd / "finetuned" / name / "checkpoint.pt"), "manifest": str(ego_test_csv),
            "classes": ego_classes, "video_root": str(ego_videos), "out": str(wd / "metrics" / f"{name}.json"),
            "view": "ego", **views,
        })
        reuses(f"finetune.{name}", wd / "finetuned" / name / "checkpoint.pt")
        return [Command.stage(f"finetune.{name}", "finetune", config_path("finetune", name)),
                Command.stage(f"evaluate.{name}", "evaluate", config_path("evaluate", name))]

    t = step(f"2/5 train the teachers (ego/exo, object, hand-object) and fine-tune the scratch row, {jobs} at a time")
    kinds = ("handobj", "ego", "object")  # the longest first
    chains = []
    for kind in kinds:  # each teacher in its own process and folder
        stage_config("train-teachers", kind, {
            "manifest": str(ego_train_csv), "test_manifest": str(ego_test_csv), "video_root": str(ego_videos),
            "ground_truth": str(world / "ground_truth"), "out": str(wd / "teachers" / kind), "teachers": [kind],
            "seed": seed, **teacher_epochs,
        })
        reuses(f"train-teachers.{kind}", wd / "teachers" / kind / "teachers.json")
        chains.append([Command.stage(f"train-teachers.{kind}", "train-teachers", config_path("train-teachers", kind))])
    scratch = [r for r in rows if ROWS[r][0] is None]  # fine-tuned from scratch: no teacher needed
    chains += [finetune_chain(row, s) for s in seed_list for row in scratch]
    step_seconds = run_chains(chains, jobs, wd / "logs", desc="teachers, scratch fine-tunes")
    teachers = {"weights": {}, "metrics": {}}
    for kind in kinds:
        done = json.loads((wd / "teachers" / kind / "teachers.json").read_text())
        teachers["weights"][kind], teachers["metrics"][kind] = done["weights"][kind], done["metrics"][kind]
    timings["train_teachers"] = time.time() - t

    t = step("3/5 extract teacher signals (Ray): the Kinetics-like set" + (", the ego training set" if "egoexo_star" in rows else ""))
    extract = run_extract(stage_config("extract-teachers", None, {
        "manifest": str(kin_csv), "classes": kin_classes, "video_root": str(kin_videos), "out": str(store),
        "workers": workers, "teachers.ego": teachers["weights"]["ego"], "teachers.object": teachers["weights"]["object"],
        "teachers.handobj": teachers["weights"]["handobj"], "shard_rows": 16,
    }))
    print(f"store {store}: {extract.ok} ok, {extract.failed} failed")
    if "egoexo_star" in rows:  # Ego-Exo*: hand-object detections over the first-person training videos
        run_extract(stage_config("extract-teachers", "ego", {
            "manifest": str(ego_train_csv), "classes": ego_classes, "video_root": str(ego_videos), "out": str(ego_store),
            "workers": workers, "teachers.handobj": teachers["weights"]["handobj"], "shard_rows": 16,
        }))
    timings["extract_teachers"] = time.time() - t

    t = step(f"4/5 pre-train students on third-person clips ({len(seed_list)} seed(s)), check them on held-out clips, "
             f"fine-tune them on the first-person clips and evaluate, {jobs} at a time")
    variants = sorted({ROWS[r][0] for r in rows if ROWS[r][0]}, key=list(PRETRAIN).index)
    common = {"manifest": str(kin_csv), "classes": kin_classes, "video_root": str(kin_videos),
              "optim.epochs": pretrain_epochs, "data.split": "train", "signals": str(store),
              "data.frame_cache": str(frame_cache), **DEMO_OPTIM}
    chains = []
    for s in seed_list:
        for variant in variants:
            name = f"{variant}-s{s}"
            stage_config("train-student", name, {**common, **PRETRAIN[variant], "optim.seed": s,
                                                 "out": str(wd / "students" / name)})
            # The pre-training task itself, on held-out third-person clips.
            stage_config("evaluate", f"pretrain-{name}", {
                "checkpoint": str(wd / "students" / name / "checkpoint.pt"), "manifest": str(kin_csv),
                "classes": kin_classes, "video_root": str(kin_videos), "out": str(wd / "metrics" / f"pretrain-{name}.json"),
                "split": "val", "frame_cache": str(frame_cache), **views,
            })
            reuses(f"train-student.{name}", wd / "students" / name / "checkpoint.pt")
            chain = [Command.stage(f"train-student.{name}", "train-student", config_path("train-student", name)),
                     Command.stage(f"evaluate.pretrain-{name}", "evaluate", config_path("evaluate", f"pretrain-{name}"))]
            for row in rows:
                if ROWS[row][0] == variant:
                    chain += finetune_chain(row, s)
            chains.append(chain)
    step_seconds.update(run_chains(chains, jobs, wd / "logs", desc="students"))
    timings["students"] = time.time() - t

    t = step("5/5 collect the results")
    pretrain_val = {v: {} for v in variants}
    for s in seed_list:
        for variant in variants:
            m = json.loads((wd / "metrics" / f"pretrain-{variant}-s{s}.json").read_text())
            pretrain_val[variant][str(s)], pretrain_chance = m["top1"], m["chance_top1"]
    results, runs = {row: {} for row in rows}, {}
    for s in seed_list:
        for row in rows:
            name = f"{row}-s{s}"
            metrics_path = wd / "metrics" / f"{name}.json"
            m = json.loads(metrics_path.read_text())
            results[row][str(s)], chance = m["mAP"], m["chance_mAP"]
            start = ROWS[row][0]
            runs[f"{row}/seed{s}"] = {
                "pretrain": str(Path("students") / f"{start}-s{s}") if start else None,
                "finetune": str(Path("finetuned") / name), "metrics": str(metrics_path.relative_to(wd))}
    timings["total"] = time.time() - t_all

    summary = {
        "ego_task": "Charades-Ego-like, first-person test videos, multi-label mAP (3 x 3 views, max)",
        "baseline_row": "baseline",
        "chance_mAP": chance,
        "seeds": seed_list,
        "rows": results,
        "pretrain_val_top1": pretrain_val,
        "pretrain_chance_top1": pretrain_chance,
        "runs": runs,
        "teachers": teachers["metrics"],
        "extract": {"ok": extract.ok, "failed": extract.failed},
        "signals_store": str(store.relative_to(wd)),
        "video_root": str(kin_videos.relative_to(wd)),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "jobs": jobs,
        "quick": quick,
        "step_seconds": step_seconds,
        "reused": reused,
    }
    (wd / "demo-summary.json").write_text(json.dumps(summary, indent=1))
    print_table(summary)
    from pipeline.report import write_report

    report = write_report([wd], wd / "report")
    print(f"report: {report['html']}  ({report['markdown']})")
    return summary


def print_table(summary: dict) -> None:
    """The results table: mean +- std over seeds per row, and each row against the baseline."""
    from pipeline.stats import compare_rows

    seeds = len(summary["seeds"])
    quick = "; --quick: one epoch on a tiny world, numbers mean nothing" if summary.get("quick") else ""
    print("\nEgo-Exo demo results (synthetic world; " + summary["ego_task"] + f"; {seeds} seed(s){quick})")
    print(f"{'model':<28}{'ego mAP':>9}{'std':>7}   vs baseline: paired difference [95 % interval over seeds]")
    for r in compare_rows(summary["rows"], summary["baseline_row"]):
        std = f"{100 * r.std:7.2f}" if r.n > 1 else f"{'-':>7}"
        d = r.difference
        versus = ""
        if d is not None:
            versus = f"{100 * d.mean:+.2f}"
            if d.n > 1:
                versus += f" [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"
            versus += f" {d.verdict}"
        print(f"{ROW_NAMES.get(r.name, r.name):<28}{100 * r.mean:>9.2f}{std}   {versus}")
    print(f"{'chance':<28}{100 * summary['chance_mAP']:>9.2f}")
    top1 = summary["pretrain_val_top1"]
    print(f"\npre-training task (third-person val clips, top-1, mean over seeds; chance "
          f"{100 * summary['pretrain_chance_top1']:.1f}): "
          + ", ".join(f"{v} {100 * sum(a.values()) / len(a):.1f}" for v, a in top1.items()))
    print("\nteachers (held-out):", json.dumps(summary["teachers"]))
    print(f"signals store: {summary['signals_store']}")
    print(f"total time: {summary['seconds']['total']:.0f} s  ({', '.join(f'{k} {v:.0f}s' for k, v in summary['seconds'].items() if k != 'total')})")
