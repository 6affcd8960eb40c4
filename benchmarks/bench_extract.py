"""Stage 1 (``extract-teachers``) on the demo world: teachers' busy share, 2 workers vs 1, driver memory.

    .venv/bin/python -m benchmarks.bench_extract [--quick] [--clips 64] [--manifest-rows 20000] [--manifest-only]

Writes a small demo world (``make_demo`` at scale 0.05: 32 Kinetics-like clips of 2 s,
160x120) and the three demo teachers untrained (their architectures and sizes; untrained
weights cost the same), then runs ``run_extract`` (local Ray, ``device=cpu``) on a Kinetics-format manifest of ``--clips`` rows whose files link to the demo
videos (the same videos repeated under new clip ids):

* teachers busy: ``teachers_busy_fraction`` of ``extract-report.json`` (the actors' summed
  teacher seconds over wall x actors), 1 worker. Target >= 0.8 when decoding is not the
  bottleneck (the row's note gives the run's decode-free share of the clip's time).
* 2 workers vs 1: ``clips_per_s`` of the report, same manifest. Target >= 1.6x.
* driver memory: the driver process's peak RSS after a run of 10x the rows against its peak
  after the base run, 2 workers each. Target: within 10 %.

The runs share one process and one local Ray instance (started once; on a loaded 2-core
machine a start takes tens of seconds).

Without ``--quick`` (about 50 s more on 2 cores), driver memory against the manifest's size as the
issue asks, through the CLI: ``pipeline run extract-teachers --shards 0:2`` on a manifest of
``--manifest-rows`` rows (default 20,000) against the same on 32 rows, each in a fresh process
with its own local Ray. Both compute the same 2 shards of 16 clips; the large run also reads
the 20,000-row manifest, indexes 20,000 files, creates a store of 20,000 rows and reads their
status. Target: peak RSS within 10 %. Beside it (reported only), ``pipeline data check`` on the
two manifests: peak RSS and wall time. ``--manifest-only`` runs only these rows.

Always exits 0; prints PASS/FAIL and writes its rows to the results file
(``benchmarks/common.py``). No GPU is used.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, add_result_args, peak_rss_mb, report

# Four predict calls per shard: the actor's decode threads run ahead of the teachers within a
# shard (its first batch is decoded before the teachers start), and 2 shards keep 2 workers busy.
SHARD_ROWS, BATCH_CLIPS = 16, 4


def demo_inputs(root: Path) -> tuple[list[Path], str, dict[str, str]]:
    """The demo world's Kinetics-like videos, its class list and the three demo teachers
    (untrained) under ``root``."""
    import torch

    from benchmarks.bench_teachers import DEMO_TEACHERS
    from data_manifests.demo_world import make_demo
    from teachers import save_teacher

    world = make_demo(root / "world", scale=0.05, workers=1)
    videos = sorted(Path(world["kinetics_video_dir"]).glob("*.mp4"))
    torch.manual_seed(0)
    teachers = {}
    for kind, (module, kwargs, meta) in DEMO_TEACHERS.items():
        model = module.build(module.DEFAULT_ARCH, **kwargs)
        teachers[kind] = str(save_teacher(root / f"{kind}.pt", model, kind, module.DEFAULT_ARCH, kwargs, meta))
    return videos, world["kinetics_classes"], teachers


def repeated_manifest(videos: list[Path], rows: int, out: Path) -> tuple[Path, Path]:
    """A Kinetics-format CSV of ``rows`` rows and a video root where each row's file is a link
    to one of ``videos`` (in turn): the same decoding work per row, any number of rows."""
    video_root = out / "videos"
    video_root.mkdir(parents=True)
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for i in range(rows):
            youtube_id = f"rep{i:08d}"
            os.symlink(videos[i % len(videos)], video_root / f"{youtube_id}_000000_000002.mp4")
            w.writerow(["clap", youtube_id, 0, 2, "train"])
    return manifest, video_root


def extract_runs(root: Path, videos: list[Path], classes: str, teachers: dict[str, str],
                 runs: list[tuple[int, int]]) -> list[dict]:
    """The ``(rows, workers)`` extractions in order, in one fresh process with one local Ray
    instance (started once: it takes tens of seconds on a loaded machine); for each, its
    ``extract-report.json`` and the driver's peak RSS after it (the peak only grows, so a run
    that needs more memory than the runs before raises it)."""
    specs = []
    for rows, workers in runs:
        run = Path(tempfile.mkdtemp(prefix=f"extract-{rows}-{workers}-", dir=root))
        manifest, video_root = repeated_manifest(videos, rows, run)
        specs.append({"manifest": str(manifest), "classes": classes, "video_root": str(video_root),
                      "out": str(run / "signals.zarr"), "teachers": teachers, "workers": workers})
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_extract", "--child", json.dumps(specs)],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "PIPELINE_NO_PROGRESS": "1"})
    if out.returncode:
        raise RuntimeError(f"extraction child failed:\n{out.stderr[-3000:]}")
    results = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  extraction process: {time.perf_counter() - t0:.1f} s, Ray started in {results[0]['ray_init_s']:.1f} s")
    for (rows, workers), r in zip(runs, results):
        print(f"  {rows} rows, {workers} worker(s): {r['report']['clips_per_s']} clips/s, teachers busy "
              f"{r['report']['teachers_busy_fraction']}, run {r['run_s']:.1f} s, driver RSS {r['rss_mb']:.0f} MB after it, "
              f"peak {r['peak_rss_mb']:.0f} MB")
    return results


def child(specs: list[dict]) -> None:
    """In the child: ``run_extract`` as the CLI runs it, for each spec, on one Ray instance."""
    import psutil
    import ray

    from pipeline.stages.extract import ExtractConfig, TeacherWeights, run_extract

    t0 = time.perf_counter()
    os.environ.setdefault("RAY_ACCEPT_CLOUD_SERVICES", "0")
    ray.init(num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, logging_level="ERROR")
    ray_init_s = time.perf_counter() - t0
    out = []
    for spec in specs:
        cfg = ExtractConfig(manifest=spec["manifest"], manifest_format="kinetics", classes=spec["classes"],
                            video_root=spec["video_root"], out=spec["out"], teachers=TeacherWeights(**spec["teachers"]),
                            workers=spec["workers"], shard_rows=SHARD_ROWS, batch_clips=BATCH_CLIPS, device="cpu",
                            progress_every_s=0)
        cfg.validate()
        t0 = time.perf_counter()
        result = run_extract(cfg)
        report_ = json.loads((Path(spec["out"]) / "extract-report.json").read_text())
        assert result.ok == result.rows, report_
        out.append({"report": report_, "peak_rss_mb": peak_rss_mb(), "rss_mb": psutil.Process().memory_info().rss / 2**20,
                    "run_s": time.perf_counter() - t0,
                    "ray_init_s": ray_init_s})
    ray.shutdown()
    print(json.dumps(out))


def cli_child(result: str, argv: list[str]) -> None:
    """In the child: ``pipeline ARGV`` as the command line runs it, then this process's wall
    time and peak RSS to ``result`` (Ray's own processes are not this process)."""
    from pipeline.cli import main as pipeline_main

    t0 = time.perf_counter()
    rc = pipeline_main(argv)
    Path(result).write_text(json.dumps({"rc": rc, "wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}))


def cli_run(argv: list[str], root: Path) -> dict:
    """``pipeline ARGV`` in a fresh process: its wall time and peak RSS."""
    result = Path(tempfile.mkstemp(suffix=".json", dir=root)[1])
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_extract", "--cli", str(result), "--", *argv],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "PIPELINE_NO_PROGRESS": "1"})
    if out.returncode or json.loads(result.read_text())["rc"]:
        raise RuntimeError(f"pipeline {' '.join(argv)} failed:\n{out.stdout[-1500:]}\n{out.stderr[-3000:]}")
    return json.loads(result.read_text())


def manifest_size_runs(root: Path, videos: list[Path], classes: str, teachers: dict[str, str],
                       small: int, big: int) -> dict[int, dict]:
    """For a manifest of ``small`` and of ``big`` rows: ``extract-teachers --shards 0:2`` and
    ``data check`` through the CLI, each in a fresh process: ``{rows: {"extract": .., "check": ..}}``."""
    made = {}
    for rows in (small, big):
        run = Path(tempfile.mkdtemp(prefix=f"manifest-{rows}-", dir=root))
        made[rows] = (run, *repeated_manifest(videos, rows, run))
    got = {rows: {} for rows in made}
    for rows, (run, manifest, video_root) in made.items():
        got[rows]["extract"] = cli_run(
            ["run", "extract-teachers", "--manifest", str(manifest), "--video-root", str(video_root),
             "--out", str(run / "signals.zarr"), "--workers", "2", "--shards", "0:2", "manifest_format=kinetics",
             f"classes={classes}", f"shard_rows={SHARD_ROWS}", f"batch_clips={BATCH_CLIPS}", "device=cpu",
             "progress_every_s=0", *(f"teachers.{kind}={path}" for kind, path in teachers.items())], root)
    for rows, (run, manifest, video_root) in made.items():
        got[rows]["check"] = cli_run(["data", "check", "--manifest", str(manifest), "--video-root", str(video_root),
                                      "--format", "kinetics", "--classes", classes], root)
    for rows, r in got.items():
        print(f"  {rows} rows: extract-teachers --shards 0:2 {r['extract']['wall_s']:.1f} s, peak RSS "
              f"{r['extract']['peak_rss_mb']:.0f} MB; data check {r['check']['wall_s']:.2f} s, peak RSS "
              f"{r['check']['peak_rss_mb']:.0f} MB")
    return got


def manifest_size_rows(got: dict[int, dict], small: int, big: int) -> list[Row]:
    ext, chk = {n: got[n]["extract"] for n in got}, {n: got[n]["check"] for n in got}
    return [
        Row(f"peak RSS of the extraction driver, {big:,}-row manifest", ext[big]["peak_rss_mb"],
            ext[small]["peak_rss_mb"], "MB", "<= 1.10",
            f"pipeline run extract-teachers --shards 0:2 on {big:,} vs {small} rows (demo videos repeated), the "
            f"same 2 shards of {SHARD_ROWS} clips computed, 2 workers, fresh CLI process each with its own local "
            f"Ray (actors excluded); wall {ext[big]['wall_s']:.1f} vs {ext[small]['wall_s']:.1f} s"),
        Row(f"peak RSS of pipeline data check, {big:,}-row manifest", chk[big]["peak_rss_mb"],
            chk[small]["peak_rss_mb"], "MB", None,
            f"{big:,} vs {small} rows, fresh CLI process each; wall {chk[big]['wall_s']:.2f} vs "
            f"{chk[small]['wall_s']:.2f} s"),
    ]


def decode_share(videos: list[Path], teachers: dict[str, str], clips: int = 8) -> float:
    """Share of a clip's time (decode + the three teachers, one thread) spent decoding."""
    import numpy as np
    import torch

    from pipeline.io.video import read_frames, sample_times
    from teachers import load_teacher

    torch.set_num_threads(1)
    loaded = [load_teacher(p) for p in teachers.values()]
    times = sample_times(0.0, 2.0, 4.0)[:8]
    t0 = time.perf_counter()
    got = [read_frames(v, times, short_side=max(t.spec.size for t in loaded)) for v in videos[:clips]]
    decode = time.perf_counter() - t0
    frames = np.stack([g.frames for g in got])
    t0 = time.perf_counter()
    for t in loaded:
        t.predict(frames, np.tile(times.astype(np.float32), (len(frames), 1)))
    predict = time.perf_counter() - t0
    return decode / (decode + predict)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 rows (320 for the memory row) (make bench)")
    ap.add_argument("--clips", type=int, default=64, help="rows of the base manifest (the memory row also runs 10x)")
    ap.add_argument("--manifest-rows", type=int,
                    help="rows of the large manifest of the CLI driver-memory rows (default 20000, with --quick 0: skipped)")
    ap.add_argument("--manifest-only", action="store_true", help="run only the CLI driver-memory rows")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cli", help=argparse.SUPPRESS)
    add_result_args(ap)
    args, argv = ap.parse_known_args()
    if args.cli:
        return cli_child(args.cli, argv[1:] if argv[:1] == ["--"] else argv)
    if argv:
        ap.error(f"unrecognized arguments: {' '.join(argv)}")
    if args.child:
        return child(json.loads(args.child))
    n = 32 if args.quick else args.clips
    large = args.manifest_rows
    if large is None:
        large = 0 if args.quick and not args.manifest_only else 20_000
    print(f"{os.cpu_count()} CPUs; extract-teachers on the demo world, local Ray, device=cpu, "
          f"shard_rows {SHARD_ROWS}, batch_clips {BATCH_CLIPS}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        videos, classes, teachers = demo_inputs(root)
        size_rows = (manifest_size_rows(manifest_size_runs(root, videos, classes, teachers, 32, large), 32, large)
                     if large else [])
        if args.manifest_only:
            return report(size_rows, args)
        share = decode_share(videos, teachers)
        print(f"  decoding takes {share:.0%} of a clip's decode + teachers time (one thread)")
        one, two, big = extract_runs(root, videos, classes, teachers, [(n, 1), (n, 2), (10 * n, 2)])
    note = (f"demo teachers (untrained), {n} rows of 2 s 160x120 clips, shard_rows {SHARD_ROWS}, batch_clips "
            f"{BATCH_CLIPS}, local Ray on {os.cpu_count()} CPUs")
    busy = one["report"]["teachers_busy_fraction"]
    rows = [
        Row("extraction: teachers busy vs wall", busy, 1.0, "of wall", ">= 0.8",
            f"{note}, 1 worker (2 workers: {two['report']['teachers_busy_fraction']}); decoding is "
            f"{share:.0%} of a clip's single-thread time"),
        Row("extraction: 2 workers vs 1", two["report"]["clips_per_s"], one["report"]["clips_per_s"], "clips/s",
            ">= 1.6", note),
        Row("peak RSS of the extraction driver, 10x more clips", big["peak_rss_mb"], two["peak_rss_mb"], "MB",
            "<= 1.10", f"{10 * n} vs {n} rows, 2 workers, one driver process: its peak after each run "
            f"(Ray actors excluded; importing torch alone takes about 700 MB); RSS after the runs "
            f"{big['rss_mb']:.0f} vs {two['rss_mb']:.0f} MB"),
        *size_rows,
    ]
    report(rows, args)


if __name__ == "__main__":
    main()
