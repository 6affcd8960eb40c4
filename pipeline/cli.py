"""The ``pipeline`` command: thin parsing over the stages (heavy imports happen inside commands)."""
from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from pipeline.errors import PipelineError

EPILOG_RUN = """\
Every stage takes a YAML config plus key=value overrides (dotted keys for groups), e.g.
  pipeline run extract-teachers --config demo-run/configs/extract-teachers.yaml workers=4
  pipeline run train-student --config cfg.yaml optim.epochs=30 loss.ego=0.1
The whole config is checked before any work starts; an unknown key or a wrong type is
reported by name (exit code 2). The resolved config is written next to the outputs.
"""

# stage -> (help, {flag: dotted config key}, example)
STAGES: dict[str, tuple[str, dict[str, str], str]] = {
    "train-teachers": (
        "train the teachers: the ego/exo classifier on Charades-Ego-format data; "
        "with per-frame ground truth (the demo world) also the object classifier and hand-object detector",
        {"--manifest": "manifest", "--video-root": "video_root", "--out": "out"},
        "pipeline run train-teachers --config demo-run/configs/train-teachers.handobj.yaml",
    ),
    "extract-teachers": (
        "stage 1: run the teachers over a manifest with Ray and write the signals store (zarr); rerun to resume",
        {"--manifest": "manifest", "--video-root": "video_root", "--out": "out", "--workers": "workers",
         "--max-failed-fraction": "max_failed_fraction", "--max-missing-fraction": "max_missing_fraction",
         "--shards": "shards"},
        "pipeline run extract-teachers --config demo-run/configs/extract-teachers.yaml --workers 2",
    ),
    "train-student": (
        "stage 2: train the SlowFast/Slow student with the Ego-Exo distillation losses (zero them for the baseline)",
        {"--manifest": "manifest", "--video-root": "video_root", "--out": "out", "--signals": "signals", "--init": "init"},
        "pipeline run train-student --config demo-run/configs/train-student.egoexo-s0.yaml optim.epochs=20",
    ),
    "finetune": (
        "stage 3: fine-tune a pre-trained student on egocentric clips (Charades-Ego, EPIC-Kitchens)",
        {"--manifest": "manifest", "--video-root": "video_root", "--out": "out", "--signals": "signals", "--init": "init"},
        "pipeline run finetune --config demo-run/configs/finetune.egoexo-s0.yaml --init demo-run/students/egoexo-s0/checkpoint.pt",
    ),
    "evaluate": (
        "multi-view evaluation of a checkpoint: mAP (multi-label) or top-1/top-5; writes metrics JSON",
        {"--manifest": "manifest", "--video-root": "video_root", "--out": "out", "--checkpoint": "checkpoint"},
        "pipeline run evaluate --config demo-run/configs/evaluate.egoexo-s0.yaml",
    ),
}

_NUMERIC_FLAGS = {"--workers": int, "--max-failed-fraction": float, "--max-missing-fraction": float}


def cmd_run(args: argparse.Namespace) -> int:
    stage = args.stage
    _, flag_map, _ = STAGES[stage]
    flags = {key: getattr(args, flag.lstrip("-").replace("-", "_")) for flag, key in flag_map.items()}
    from pipeline.stages import load_stage_config, run_stage

    if args.print_config:  # every key with its resolved value; required paths may still be empty
        import yaml

        from pipeline.config import to_dict

        cfg = load_stage_config(stage, args.config, args.overrides, flags, validate=False)
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    cfg = load_stage_config(stage, args.config, args.overrides, flags)
    result = run_stage(stage, cfg)
    _print_result(stage, result)
    return 0


def _print_result(stage: str, result) -> None:
    import json
    from dataclasses import asdict, is_dataclass

    if is_dataclass(result):
        result = asdict(result)
    if isinstance(result, dict):
        result = {k: v for k, v in result.items() if k != "history"}
        print(json.dumps(result, indent=1, default=str))


def cmd_make_demo(args: argparse.Namespace) -> int:
    from data_manifests.demo_world import make_demo

    summary = make_demo(args.out, seed=args.seed, scale=args.scale)
    import json

    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from data_manifests.check import check_manifest
    from data_manifests.table import ManifestError

    from data_manifests.classes import read_class_list

    try:
        classes = read_class_list(args.classes) if args.classes else None
        report = check_manifest(args.manifest, args.video_root, args.format, probe_videos=args.probe, classes=classes)
    except (ManifestError, FileNotFoundError) as e:
        raise PipelineError(str(e)) from None
    print(report.summary())
    problems = not report.ok or bool(report.missing)
    return 1 if args.strict and problems else 0


def cmd_data_cache_frames(args: argparse.Namespace) -> int:
    from pipeline.io.frame_cache import cache_manifest

    if args.short_side < 1:
        raise PipelineError("--short-side must be at least 1")
    done = cache_manifest(args.manifest, args.video_root, args.out, args.short_side, args.encoding, args.format,
                          args.classes, args.split)
    if done["missing"]:
        print(f"{len(done['missing'])} videos missing on disk (not cached), e.g. {done['missing'][:3]}")
    print(f"{args.out}: {done['added']} clips added, {done['already_cached']} already there, {done['entries']} in all")
    for line in done["failed"]:
        print(f"not cached (unreadable): {line}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    if args.seeds < 1:
        raise PipelineError("--seeds must be at least 1")
    if args.jobs < 1:
        raise PipelineError("--jobs must be at least 1")
    run_demo(args.workdir, seed=args.seed, workers=args.workers, seeds=args.seeds, ablations=args.ablations,
             jobs=args.jobs, quick=args.quick)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pipeline.inspect import inspect_store

    return inspect_store(args.store, verify=args.verify, clip=args.clip, out=args.out, video_root=args.video_root)


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import write_report

    done = write_report(args.run_dirs, args.out)
    print(f"wrote {done['html']} and {done['markdown']} ({len(done['images'])} pictures)")
    for item in done["missing"]:
        print(f"  not found: {item}")
    return 0


def cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    from student.checkpoints import convert_checkpoint

    done = convert_checkpoint(args.checkpoint, args.out, arch=args.arch, to=args.to, layout=args.layout)
    report = done["report"]
    print(report.summary())
    for what, names in (("missing from the file", report.missing), ("unexpected (dropped)", report.unexpected),
                        ("shape-mismatched (dropped)", report.mismatched),
                        (f"left out (no place in layout {done['layout']})", done["left_out"])):
        if names:
            print(f"{what}: {', '.join(names)}")
    print(f"wrote {done['out']} ({done['model_args']['backbone']}, {args.to}"
          + (f", layout {done['layout']})" if done["layout"] else ")"))
    return 0


def cmd_signals_import(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pipeline.stages.egoexo_release import import_egoexo, parse_frame_size

    result = import_egoexo(
        args.manifest, args.out, ego_file=args.ego, object_file=args.object, handobj_dir=args.handobj,
        video_root=args.video_root, native_fps=args.native_fps, frame_size=parse_frame_size(args.frame_size),
        manifest_format=args.format, classes=args.classes, frame_rate=args.frame_rate, max_frames=args.max_frames,
        max_boxes=args.max_boxes,
    )
    _print_result("import-egoexo", asdict(result))
    return 0


def cmd_signals_export(args: argparse.Namespace) -> int:
    from pipeline.stages.egoexo_release import export_egoexo, parse_frame_size

    done = export_egoexo(args.store, args.manifest, args.out, video_root=args.video_root, native_fps=args.native_fps,
                         frame_size=parse_frame_size(args.frame_size), manifest_format=args.format, classes=args.classes)
    _print_result("export-egoexo", done)
    return 0


def cmd_student_list(args: argparse.Namespace) -> int:
    from student.backbones import PUBLISHED_PARAMS, count_parameters, list_backbones

    print(f"{'backbone':<16}{'params':>9}{'published':>11}   (backbone + 400-class head.projection)")
    for name in list_backbones():
        published = f"{PUBLISHED_PARAMS[name] / 1e6:.2f}M" if name in PUBLISHED_PARAMS else "-"
        print(f"{name:<16}{count_parameters(name) / 1e6:>8.2f}M{published:>11}")
    return 0


def cmd_teachers_list(args: argparse.Namespace) -> int:
    from teachers.base import list_teachers, teacher_class

    for kind in list_teachers():
        info = teacher_class(kind).describe()
        print(f"{kind}: {info['summary']}")
        for key in ("architectures", "input", "weights"):
            print(f"  {key:<14}{info[key]}")
    print("\nuse one: pipeline run extract-teachers ... teachers.KIND=FILE_OR_NAME; try them: pipeline teachers check --config F")
    return 0


def cmd_teachers_check(args: argparse.Namespace) -> int:
    from pipeline.stages import load_stage_config
    from pipeline.teachers_check import check_teachers, format_checks

    cfg = load_stage_config("extract-teachers", args.config, args.overrides)
    print(format_checks(*check_teachers(cfg)))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from pipeline.recipes import RECIPES, recipe_path

    if args.show:
        print(recipe_path(args.show).read_text(), end="")
        return 0
    width = max(len(r.name) for r in RECIPES)
    print(f"{'recipe':<{width}}  {'stage':<13}  published (paper / release README)")
    for r in RECIPES:
        print(f"{r.name:<{width}}  {r.stage:<13}  {r.published}")
    print("\nrun one:  pipeline run STAGE --config recipe:NAME manifest=... video_root=... out=... [init=...] [signals=...]"
          "\nits file: pipeline recipes --show NAME")
    return 0


def cmd_teachers_convert(args: argparse.Namespace) -> int:
    from teachers.base import TeacherWeightsError
    from teachers.convert import CONVERTERS

    options = {k: v for k, v in (("hand_threshold", args.hand_threshold), ("object_threshold", args.object_threshold),
                                 ("nms_threshold", args.nms_threshold)) if v is not None}
    if options and args.format != "100doh":
        raise PipelineError(f"--{next(iter(options)).replace('_', '-')} applies to --format 100doh only")
    try:
        done = CONVERTERS[args.format](args.weights, args.out, **options)
    except TeacherWeightsError as e:
        raise PipelineError(str(e)) from None
    print(", ".join(f"{k} {v}" for k, v in done.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="pipeline",
        description="Ego-Exo pre-training: distil egocentric teacher signals from third-person video into a video model.",
        epilog="examples:\n  pipeline demo --workdir demo-run\n  pipeline run extract-teachers --config cfg.yaml workers=4\n"
        "  pipeline inspect demo-run/signals/kinetics.zarr --verify",
        formatter_class=fmt,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="run the whole pipeline on the bundled synthetic world and print a results table",
                       description="Generate the synthetic world, train the teachers, extract signals with Ray, "
                       "pre-train baseline and Ego-Exo students, fine-tune them (and a scratch model) on the ego "
                       "clips, evaluate, and print a comparison. Rerunning resumes finished steps.",
                       epilog="examples:\n  pipeline demo --workdir demo-run\n"
                       "  pipeline demo --workdir demo-full --seeds 3 --ablations   # every row, mean +- std over 3 seeds\n"
                       "  pipeline demo --workdir demo-run --jobs 1   # one stage at a time, with every core",
                       formatter_class=fmt)
    d.add_argument("--workdir", default="demo-run", help="folder for everything the demo writes (default: demo-run)")
    d.add_argument("--seed", type=int, default=0, help="world and training seed (default: 0)")
    d.add_argument("--workers", type=int, default=2, help="Ray actors for extract-teachers (default: 2)")
    d.add_argument("--seeds", type=int, default=1, help="students per row, seeds SEED, SEED+1, ... (default: 1)")
    d.add_argument("--ablations", action="store_true",
                   help="also Ego-Exo* and the one-signal rows (Ego-Score, Object-Score, Interaction-Map only)")
    d.add_argument("--jobs", type=int, default=2,
                   help="teachers, students and fine-tunes run this many at a time, each in its own process with "
                   "cores/JOBS threads and its log in WORKDIR/logs (default: 2; 1 runs them one after the other)")
    d.add_argument("--quick", action="store_true",
                   help="every stage on a world an eighth of the size, one epoch each: a few minutes, to check that "
                   "everything runs (its numbers mean nothing); use its own --workdir")
    d.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="dataset utilities", description="Dataset utilities.")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    md = dsub.add_parser("make-demo", help="write the synthetic world: videos, manifests and ground truth",
                         description="Write the synthetic demo world: Kinetics-format third-person clips, a paired "
                         "Charades-Ego-format ego/exo set, and per-frame ground truth (hands, objects, contact).",
                         epilog="example:\n  pipeline data make-demo --out demo-world --seed 0", formatter_class=fmt)
    md.add_argument("--out", required=True, help="output folder")
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--scale", type=float, default=1.0, help="multiply the number of clips (default: 1.0)")
    md.set_defaults(func=cmd_make_demo)
    ck = dsub.add_parser("check", help="validate a manifest against the disk before spending GPU hours",
                         description="Parse a manifest row by row and compare it with the videos on disk: rows, "
                         "classes, per-split counts, missing files, duplicate ids and unreadable rows, each with "
                         "its line number. Missing files are expected in Kinetics downloads and only reported; "
                         "with --strict any problem exits 1.",
                         epilog="examples:\n  pipeline data check --manifest kinetics400/train.csv --video-root kinetics400/videos\n"
                         "  pipeline data check --manifest EPIC_100_train.csv --video-root EPIC-KITCHENS --probe --strict",
                         formatter_class=fmt)
    ck.add_argument("--manifest", required=True)
    ck.add_argument("--video-root", required=True)
    ck.add_argument("--format", default="auto", help="auto (default), kinetics, charades_ego, epic100, generic, pyslowfast")
    ck.add_argument("--classes", help="class list file (default: the dataset's shipped list: Kinetics-400, Charades' 157, "
                    "EPIC-100's verbs; generic formats take the labels in the file)")
    ck.add_argument("--probe", action="store_true", help="also open every video and check it has a video stream")
    ck.add_argument("--strict", action="store_true", help="exit 1 when any problem is found")
    ck.set_defaults(func=cmd_data_check)
    cf = dsub.add_parser("cache-frames", help="decode a manifest's clips once into an HDF5 frame cache",
                         description="Decode every clip of a manifest once, resized to --short-side, into an HDF5 file "
                         "that train-student, finetune and evaluate read instead of the videos (data.frame_cache / "
                         "frame_cache in their configs). Worth it when decoding, not the model, sets the pace (the "
                         "'step/data_wait' curve in TensorBoard near 1). A rerun adds only the clips not yet cached.",
                         epilog="examples:\n  pipeline data cache-frames --manifest demo-run/world/kinetics/kinetics_demo.csv "
                         "--video-root demo-run/world/kinetics/videos --short-side 91 --out demo-run/kinetics-frames.h5\n"
                         "  pipeline run train-student --config cfg.yaml data.frame_cache=demo-run/kinetics-frames.h5",
                         formatter_class=fmt)
    cf.add_argument("--manifest", required=True)
    cf.add_argument("--video-root", required=True)
    cf.add_argument("--out", required=True, help="the cache file (.h5); an existing cache gets the clips it lacks")
    cf.add_argument("--short-side", type=int, required=True,
                    help="cached short side: the largest the student asks for (the top of its train jitter, e.g. 91 "
                    "for the demo's tiny students, 320 for the paper's; a larger request is upsampled)")
    cf.add_argument("--encoding", choices=["raw", "jpeg"], default="raw",
                    help="raw uint8 (fastest; 1 MB per 2 s demo clip) or JPEG per frame (for full-size datasets)")
    cf.add_argument("--format", default="auto", help="auto (default), kinetics, charades_ego, epic100, generic, pyslowfast")
    cf.add_argument("--classes", help="class list file (default: the dataset's shipped list)")
    cf.add_argument("--split", help="cache only this split's rows (default: every row)")
    cf.set_defaults(func=cmd_data_cache_frames)

    run = sub.add_parser("run", help="run one pipeline stage from a YAML config", description="Run one pipeline stage.",
                         epilog="examples:\n  pipeline run extract-teachers --config cfg.yaml --workers 4\n"
                         "  pipeline run train-student --config cfg.yaml optim.epochs=30\n\n" + EPILOG_RUN,
                         formatter_class=fmt)
    rsub = run.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, (help_text, flag_map, example) in STAGES.items():
        sp = rsub.add_parser(stage, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                             epilog=f"example:\n  {example}\n\n{EPILOG_RUN}", formatter_class=fmt)
        sp.add_argument("--config", help="YAML config file (default: built-in defaults)")
        sp.add_argument("--print-config", action="store_true",
                        help="print every config key with its resolved value as YAML, and exit")
        for flag, key in flag_map.items():
            sp.add_argument(flag, type=_NUMERIC_FLAGS.get(flag, str), default=None, help=f"sets config key '{key}'")
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.epochs=5")
        sp.set_defaults(func=cmd_run)

    cc = sub.add_parser("convert-checkpoint", help="convert a student checkpoint between ours and PySlowFast / Ego-Exo",
                        description="Read a student checkpoint (ours .pt; PySlowFast or Ego-Exo release .pyth; PySlowFast "
                        "Caffe2 .pkl, read without running code), check every backbone tensor fits the architecture "
                        "by name and shape (any that does not is an error naming it), and write it as our checkpoint "
                        "(model, model_args read off the tensors, source) or, with --to pyslowfast, as a PySlowFast "
                        "{model_state, epoch} .pyth. Prints matched/missing/unexpected/shape-mismatched counts.",
                        epilog="examples:\n  pipeline convert-checkpoint Ego_Exo_SLOWFAST_8x8_R50.pyth --arch slowfast_r50 --out egoexo_r50.pt\n"
                        "  pipeline convert-checkpoint SLOWFAST_8x8_R50.pkl --arch slowfast_r50 --out SLOWFAST_8x8_R50.pyth --to pyslowfast\n"
                        "  pipeline convert-checkpoint demo-run/students/egoexo-s0/checkpoint.pt --out egoexo.pyth --to pyslowfast",
                        formatter_class=fmt)
    cc.add_argument("checkpoint", metavar="IN", help="checkpoint to read: .pt / .pyth / .pkl")
    cc.add_argument("--arch", help="student backbone (see 'pipeline student list'; default: the one whose shapes match)")
    cc.add_argument("--out", required=True, help="file to write")
    cc.add_argument("--to", choices=["ours", "pyslowfast"], default="ours", help="output format (default: ours)")
    cc.add_argument("--layout", default="auto", choices=["auto", "baseline", "multitask", "charades-ego", "epic100", "epic55"],
                    help="--to pyslowfast: release head names (default auto: epic100 with a noun head, multitask "
                    "with ego/object heads, else baseline head.projection)")
    cc.set_defaults(func=cmd_convert_checkpoint)

    rc = sub.add_parser("recipes", help="the paper's recipes: one config per published row",
                        description="List the paper's recipes: one stage config per row of its tables, with the "
                        "settings of the Ego-Exo release's configs (schedule, batch, sampling, loss weights, test "
                        "views), the stage that runs it and the number the paper reports for it.",
                        epilog="examples:\n  pipeline recipes\n  pipeline recipes --show charades-ego/finetune_slowfast_r50\n"
                        "  pipeline run train-student --config recipe:k400/egoexo_slowfast_r50 optim.batch_size=64 \\\n"
                        "      manifest=k400/train.csv video_root=k400/videos signals=k400.zarr out=runs/egoexo",
                        formatter_class=fmt)
    rc.add_argument("--show", metavar="NAME", help="print one recipe's YAML")
    rc.set_defaults(func=cmd_recipes)

    st = sub.add_parser("student", help="student models", description="Student models.")
    ssub = st.add_subparsers(dest="student_command", required=True, metavar="COMMAND")
    sl = ssub.add_parser("list", help="registered backbones with their parameter counts",
                         description="List the registered student backbones with their parameter count for a "
                         "400-class action head (backbone + head.projection), next to the published count "
                         "(PySlowFast / PyTorchVideo model zoo; '-' where none is published).",
                         epilog="example:\n  pipeline student list", formatter_class=fmt)
    sl.set_defaults(func=cmd_student_list)

    sg = sub.add_parser("signals", help="the Ego-Exo release's precomputed signals to and from a signals store",
                        description="Move teacher signals between a signals store and the Ego-Exo release's files "
                        "(k400_ego_predicts.pkl, k400_IN_predicts.pkl, k400_handobj_predicts/<video>.npy).")
    sgsub = sg.add_subparsers(dest="signals_command", required=True, metavar="COMMAND")
    si = sgsub.add_parser(
        "import-egoexo", help="write a signals store from the release's files, aligned to a manifest",
        description="Write a signals store for MANIFEST from the Ego-Exo release's files, so a student can be "
        "trained without running the teachers. Pickles are read with a restricted unpickler (numpy arrays, "
        "numbers, strings, containers); a file asking for anything else is refused by name and nothing in it runs. "
        "Clips are found by their manifest path (a PySlowFast train list gives the release's keys exactly) or "
        "by video file name. Teacher frames are taken every 1/--frame-rate s as extract-teachers samples them, "
        "each the native frame on screen then; boxes become 0-1 of the frame. Rows the release lacks are marked "
        "failed with the reason.",
        epilog="examples:\n  pipeline signals import-egoexo --ego aux/k400_ego_predicts.pkl --object aux/k400_IN_predicts.pkl \\\n"
        "      --handobj aux/k400_handobj_predicts --manifest k400/train.csv --video-root k400/videos --out k400.zarr\n"
        "  pipeline signals import-egoexo --ego aux/k400_ego_predicts.pkl --manifest train.csv \\\n"
        "      --native-fps 30 --frame-size 340x256 --out k400-ego.zarr\n"
        "  pipeline inspect k400.zarr --verify",
        formatter_class=fmt)
    si.add_argument("--ego", metavar="PKL", help="k400_ego_predicts.pkl: {train-list path: 2 exo/ego logits}")
    si.add_argument("--object", metavar="PKL", help="k400_IN_predicts.pkl: {train-list path: 1000 ImageNet logits}")
    si.add_argument("--handobj", metavar="DIR", help="folder of <video>.npy 100DOH detections, one entry per native frame")
    si.add_argument("--manifest", required=True, help="the clips to import, in store row order")
    si.add_argument("--out", required=True, help="the signals store to write (a new .zarr folder)")
    si.add_argument("--video-root", help="videos, for each one's frame rate and size (what the release's frame "
                    "indices and pixel boxes refer to)")
    si.add_argument("--native-fps", type=float, help="without --video-root: every video's frame rate")
    si.add_argument("--frame-size", metavar="WxH", help="without --video-root: every video's frame size, e.g. 340x256")
    si.add_argument("--frame-rate", type=float, default=4.0, help="teacher frames per second in the store (default: 4)")
    si.add_argument("--max-frames", type=int, default=40, help="teacher frames kept per clip (default: 40)")
    si.add_argument("--max-boxes", type=int, default=8, help="detections kept per frame, best score first (default: 8)")
    si.add_argument("--format", default="auto", help="manifest format: auto (default), kinetics, pyslowfast, generic, ...")
    si.add_argument("--classes", help="class list file (default: the dataset's shipped list)")
    si.set_defaults(func=cmd_signals_import)
    se = sgsub.add_parser(
        "export-egoexo", help="write the release's file layout from a signals store",
        description="Write k400_ego_predicts.pkl, k400_IN_predicts.pkl (keys: the manifest's paths as written; per "
        "video the mean logits over its frames) and k400_handobj_predicts/<video>.npy (per native frame the "
        "detections of the store's nearest teacher frame, in pixels; offset and hand side columns NaN) from the "
        "store's completed rows, into an empty folder OUT.",
        epilog="examples:\n  pipeline signals export-egoexo --store k400.zarr --manifest k400/train.csv "
        "--video-root k400/videos --out aux\n"
        "  pipeline signals export-egoexo --store demo-run/signals/kinetics.zarr "
        "--manifest demo-run/world/kinetics/kinetics_demo.csv --native-fps 15 --frame-size 160x120 --out demo-aux",
        formatter_class=fmt)
    se.add_argument("--store", required=True)
    se.add_argument("--manifest", required=True, help="the manifest the store was written for")
    se.add_argument("--out", required=True, help="folder to write (must be empty or new)")
    se.add_argument("--video-root", help="videos, for each one's frame rate, size and frame count")
    se.add_argument("--native-fps", type=float, help="without --video-root: every video's frame rate")
    se.add_argument("--frame-size", metavar="WxH", help="without --video-root: every video's frame size")
    se.add_argument("--format", default="auto", help="manifest format (default: auto)")
    se.add_argument("--classes", help="class list file (default: the dataset's shipped list)")
    se.set_defaults(func=cmd_signals_export)

    te = sub.add_parser("teachers", help="teacher models: list the kinds, check a configuration, convert published weights",
                        description="Teacher models (stage 1).")
    tsub = te.add_subparsers(dest="teachers_command", required=True, metavar="COMMAND")
    tl = tsub.add_parser("list", help="registered teacher kinds: architectures, input, weight formats",
                         description="List the registered teacher kinds: what each computes, its architectures, the "
                         "input it takes (frames per window, size, frame rate, preprocessing) and the weights it reads.",
                         epilog="example:\n  pipeline teachers list", formatter_class=fmt)
    tl.set_defaults(func=cmd_teachers_list)
    tk = tsub.add_parser("check", help="load the configured teachers and run them on one clip",
                         description="Load every teacher an extract-teachers config names, run them on the first clip "
                         "of its manifest that decodes (at the video's own size; each teacher resizes for itself) "
                         "and print each output's shape and dtype, the store dtype, the device, the weights' dtype "
                         "and the milliseconds per frame (after a one-frame warm-up). Exit 1 when a weights file is "
                         "missing, no clip decodes, or an output's shape is not what the store expects.",
                         epilog="examples:\n  pipeline teachers check --config demo-run/configs/extract-teachers.yaml\n"
                         "  pipeline teachers check --config cfg.yaml teachers.object=resnet152:IMAGENET1K_V2 device=cuda",
                         formatter_class=fmt)
    tk.add_argument("--config", required=True, help="extract-teachers YAML config")
    tk.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. max_frames=8")
    tk.set_defaults(func=cmd_teachers_check)
    tc = tsub.add_parser("convert", help="convert a 100DOH or detectron2 checkpoint (strict: every tensor placed)",
                         description="Convert published detector weights. --format 100doh: the 100 Days of Hands "
                         "checkpoint (faster_rcnn_1_8_132028.pth) into a 'hoi100doh' teacher file for "
                         "teachers.handobj of extract-teachers. --format detectron2: a model-zoo Faster R-CNN "
                         "R50/R101 C4/FPN (.pkl, read without running code, or .pth) into a torchvision Faster "
                         "R-CNN file (teachers.convert.detectron2.load_converted). A tensor with no place, or a "
                         "place without a tensor, is an error naming the key.",
                         epilog="examples:\n  pipeline teachers convert faster_rcnn_1_8_132028.pth --format 100doh --out hoi100doh.pt\n"
                         "  pipeline teachers convert model_final_b275ba.pkl --format detectron2 --out r50_fpn.pt",
                         formatter_class=fmt)
    tc.add_argument("weights", metavar="IN", help="checkpoint to read")
    tc.add_argument("--format", required=True, choices=["100doh", "detectron2"])
    tc.add_argument("--out", required=True, help="file to write")
    for flag, default in (("--hand-threshold", 0.5), ("--object-threshold", 0.5), ("--nms-threshold", 0.3)):
        tc.add_argument(flag, type=float, help=f"100doh: stored in the teacher file (default {default}, as their demo.py)")
    tc.set_defaults(func=cmd_teachers_convert)

    ins = sub.add_parser("inspect", help="summarise, verify or picture a signals store (dask)",
                         description="Summarise a signals store with dask: arrays, provenance, status counts and "
                         "per-signal statistics (float16 is cast to float32 per chunk before reducing). "
                         "--verify checks every completed row; --clip draws one clip's signals.",
                         epilog="examples:\n  pipeline inspect demo-run/signals/kinetics.zarr\n"
                         "  pipeline inspect demo-run/signals/kinetics.zarr --verify\n"
                         "  pipeline inspect STORE --clip abc_000010_000012 --video-root demo-run/world/kinetics/videos --out clip.png",
                         formatter_class=fmt)
    ins.add_argument("store")
    ins.add_argument("--verify", action="store_true", help="check every completed row; exit 1 on problems")
    ins.add_argument("--clip", help="clip id to draw")
    ins.add_argument("--out", help="PNG path for --clip")
    ins.add_argument("--video-root", help="video root for --clip (default: the one recorded in the store)")
    ins.set_defaults(func=cmd_inspect)

    rp = sub.add_parser("report", help="write report.html / report.md for demo runs: results over seeds, curves, AP, signals",
                        description="Write a report of one or more demo run directories (each with demo-summary.json; "
                        "several pool their seeds) into OUT: the results table (mean +- std over seeds, each row's "
                        "paired difference to the baseline with a 95 %% interval and whether it exceeds seed noise), "
                        "training curves per loss term, per-class AP of the ego task, a gallery of teacher signals, "
                        "the signals store's statistics with its classes ranked by Ego-Score, and the time of each "
                        "stage. Pictures are PNG files in OUT, referenced by relative path.",
                        epilog="examples:\n  pipeline report demo-run --out demo-run/report\n"
                        "  pipeline report runs/seeds-0-2 runs/seeds-3-5 --out report", formatter_class=fmt)
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=Path, help="folder with a demo-summary.json")
    rp.add_argument("--out", required=True, type=Path, help="folder to write report.html, report.md and pictures into")
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from pipeline.parallel import die_with_parent

    die_with_parent()  # a run the demo started stops when the demo does
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: no space left on the device{where}; finished work is kept: free space and rerun",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
