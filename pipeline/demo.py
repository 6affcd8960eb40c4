"""``pipeline demo``: the whole pipeline on the synthetic world, every stage through its real config.

Each stage's config is written to ``WORKDIR/configs/<stage>[.<variant>].yaml`` first
and then run exactly as ``pipeline run <stage> --config`` would, so any step can be
rerun by hand. Numbers are reported as they come out.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.config import dump_config

# Demo-sized settings (2-core CPU, about ten minutes in all). Measured, not tuned toward a result.
PRETRAIN_EPOCHS = 20
FINETUNE_EPOCHS = 12
# One epoch of linear warm-up from a tenth of the lr: a few hundred steps from scratch need it.
DEMO_OPTIM = {"optim.lr": 0.1, "optim.warmup_epochs": 1.0, "optim.warmup_start_lr": 0.01}


def run_demo(workdir: str | Path, seed: int = 0, workers: int = 2) -> dict:
    from data_manifests.demo_world import make_demo
    from pipeline.stages import load_stage_config
    from pipeline.stages.evaluate import run_evaluate
    from pipeline.stages.extract import run_extract
    from pipeline.stages.train import run_train
    from pipeline.stages.train_teachers import run_train_teachers

    wd = Path(workdir).resolve()
    configs = wd / "configs"
    timings: dict[str, float] = {}
    t_all = time.time()

    def step(name: str):
        print(f"\n== {name} ==", flush=True)
        return time.time()

    def stage_config(stage: str, variant: str | None, values: dict):
        path = configs / (f"{stage}.{variant}.yaml" if variant else f"{stage}.yaml")
        flat = [f"{k}={json.dumps(v)}" for k, v in values.items()]
        cfg = load_stage_config(stage, None, flat, {})
        dump_config(cfg, path)
        return cfg

    t = step("1/6 make the synthetic world")
    world = wd / "world"
    if not (world / "demo_world.json").exists():
        make_demo(world, seed=seed)
    else:
        print(f"world exists at {world}; reusing it")
    timings["make_world"] = time.time() - t
    kin_csv = world / "kinetics" / "kinetics_demo.csv"
    kin_videos = world / "kinetics" / "videos"
    ego_train_csv = world / "charades_ego" / "CharadesEgo_v1_train.csv"
    ego_test_csv = world / "charades_ego" / "CharadesEgo_v1_test.csv"
    ego_videos = world / "charades_ego" / "videos"
    # The demo's label sets are its own, so every stage names their class lists.
    kin_classes = str(world / "kinetics" / "classes.txt")
    ego_classes = str(world / "charades_ego" / "Charades_v1_classes.txt")
    views = {"temporal_views": 3, "spatial_crops": 3}  # the release tests 10 x 3; 3 x 3 keeps the demo short

    t = step("2/6 train the teachers (ego/exo, object, hand-object)")
    tcfg = stage_config("train-teachers", None, {
        "manifest": str(ego_train_csv), "test_manifest": str(ego_test_csv), "video_root": str(ego_videos),
        "ground_truth": str(world / "ground_truth"), "out": str(wd / "teachers"), "seed": seed,
    })
    teachers = run_train_teachers(tcfg)
    timings["train_teachers"] = time.time() - t

    t = step("3/6 extract teacher signals over the Kinetics-like set (Ray)")
    store = wd / "signals" / "kinetics.zarr"
    ecfg = stage_config("extract-teachers", None, {
        "manifest": str(kin_csv), "classes": kin_classes, "video_root": str(kin_videos), "out": str(store),
        "workers": workers,
        "teachers.ego": teachers["weights"]["ego"], "teachers.object": teachers["weights"]["object"],
        "teachers.handobj": teachers["weights"]["handobj"], "shard_rows": 16,
    })
    extract = run_extract(ecfg)
    print(f"store {store}: {extract.ok} ok, {extract.failed} failed")
    timings["extract_teachers"] = time.time() - t

    t = step("4/6 pre-train students on third-person clips: baseline and Ego-Exo")
    students = {}
    common = {"manifest": str(kin_csv), "classes": kin_classes, "video_root": str(kin_videos),
              "optim.epochs": PRETRAIN_EPOCHS, "optim.seed": seed, "data.split": "train", **DEMO_OPTIM}
    for variant, extra in (
        # The release's baseline: no distillation, dropout 0.5 (Ego-Exo pre-training uses none).
        ("baseline", {"loss.ego": 0.0, "loss.object": 0.0, "loss.hand_map": 0.0, "loss.object_map": 0.0,
                      "model.dropout": 0.5}),
        ("egoexo", {"signals": str(store)}),
    ):
        cfg = stage_config("train-student", variant, {**common, **extra, "out": str(wd / "students" / variant)})
        print(f"-- {variant}")
        students[variant] = run_train(cfg, "train-student")
    pretrain_val = {}
    for variant, res in students.items():  # the pre-training task itself, on held-out third-person clips
        cfg = stage_config("evaluate", f"pretrain-{variant}", {
            "checkpoint": res["checkpoint"], "manifest": str(kin_csv), "classes": kin_classes,
            "video_root": str(kin_videos), "out": str(wd / "metrics" / f"pretrain-{variant}.json"), "split": "val",
            **views,
        })
        pretrain_val[variant] = run_evaluate(cfg)
    timings["train_student"] = time.time() - t

    t = step("5/6 fine-tune on the first-person (ego) clips: scratch, baseline, Ego-Exo")
    finetuned = {}
    for variant in ("scratch", "baseline", "egoexo"):
        values = {"manifest": str(ego_train_csv), "classes": ego_classes, "video_root": str(ego_videos),
                  "out": str(wd / "finetuned" / variant), "optim.epochs": FINETUNE_EPOCHS, "optim.seed": seed,
                  "data.view": "ego", "data.split": None, **DEMO_OPTIM}
        if variant != "scratch":
            values["init"] = students[variant]["checkpoint"]
        cfg = stage_config("finetune", variant, values)
        print(f"-- {variant}")
        finetuned[variant] = run_train(cfg, "finetune")
    timings["finetune"] = time.time() - t

    t = step("6/6 evaluate on held-out first-person clips")
    results = {}
    for variant in ("scratch", "baseline", "egoexo"):
        cfg = stage_config("evaluate", variant, {
            "checkpoint": finetuned[variant]["checkpoint"], "manifest": str(ego_test_csv), "classes": ego_classes,
            "video_root": str(ego_videos), "out": str(wd / "metrics" / f"{variant}.json"), "view": "ego", **views,
        })
        results[variant] = run_evaluate(cfg)
    timings["evaluate"] = time.time() - t
    timings["total"] = time.time() - t_all

    summary = {
        "ego_task": "Charades-Ego-like, first-person test videos, multi-label mAP (3 x 3 views, max)",
        "results": {v: {"mAP": r["mAP"], "chance_mAP": r["chance_mAP"], "clips": r["clips"],
                        "checkpoint": finetuned[v]["checkpoint"]} for v, r in results.items()},
        "pretrained_checkpoints": {v: s["checkpoint"] for v, s in students.items()},
        "pretrain_val_top1": {v: r["top1"] for v, r in pretrain_val.items()},
        "signals_store": str(store),
        "teachers": teachers["metrics"],
        "extract": {"ok": extract.ok, "failed": extract.failed},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    (wd / "demo-summary.json").write_text(json.dumps(summary, indent=1))
    print_table(summary)
    return summary


def print_table(summary: dict) -> None:
    print("\nEgo-Exo demo results (synthetic world; " + summary["ego_task"] + ")")
    print(f"{'model':<26}{'ego mAP':>10}")
    names = {"scratch": "scratch (no pre-training)", "baseline": "exo-pretrained baseline", "egoexo": "Ego-Exo"}
    for v, r in summary["results"].items():
        print(f"{names[v]:<26}{100 * r['mAP']:>10.2f}")
    chance = next(iter(summary["results"].values()))["chance_mAP"]
    print(f"{'chance':<26}{100 * chance:>10.2f}")
    top1 = summary["pretrain_val_top1"]
    print("\npre-training task (third-person val clips, top-1): "
          + ", ".join(f"{v} {100 * a:.1f}" for v, a in top1.items()))
    print("\nteachers (held-out):", json.dumps(summary["teachers"]))
    print(f"signals store: {summary['signals_store']}")
    print(f"total time: {summary['seconds']['total']:.0f} s  ({', '.join(f'{k} {v:.0f}s' for k, v in summary['seconds'].items() if k != 'total')})")
