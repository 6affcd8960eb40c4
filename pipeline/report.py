"""``pipeline report``: one page to judge demo runs by.

From one or more run directories (each with the demo's ``demo-summary.json``; several
directories pool their seeds) it writes ``report.md`` and ``report.html`` into OUT: the
results over seeds with paired differences against the baseline, training curves per loss
term, per-class AP of the ego task, a gallery of teacher signals, the signals store's
statistics with its classes ranked by Ego-Score, the teachers' held-out metrics and the
time of each stage.

The pictures are PNG files in OUT, referenced by relative path from both files (not
embedded as base64): OUT is self-contained as a folder (copy or zip it whole), the markdown
shows the same pictures, and the README can link one of them. The HTML is the markdown
rendered, with inline CSS and nothing fetched from elsewhere.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.stats import EXCEEDS, TOO_FEW, RowStats, compare_rows, seed_order

SUMMARY = "demo-summary.json"
GALLERY_CLIPS = 4
METHOD_ROW = "egoexo"  # the row whose win or loss against the baseline the results open with
CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%}code{background:#f3f3f3}"""


@dataclass
class Run:
    """One run directory and its ``demo-summary.json``; relative paths in it are relative to ``dir``."""

    dir: Path
    summary: dict

    def path(self, relative: str | None) -> Path | None:
        return None if relative is None else self.dir / relative  # an absolute path stays as it is


def load_runs(run_dirs: list[Path]) -> list[Run]:
    if not run_dirs:
        raise PipelineError("name at least one run directory")
    runs = []
    for d in run_dirs:
        f = Path(d) / SUMMARY
        if not f.is_file():
            raise PipelineError(f"{d} has no {SUMMARY}; run 'pipeline demo' into it first")
        runs.append(Run(Path(d), json.loads(f.read_text())))
    return runs


def pool_seeds(runs: list[Run], key: str) -> dict[str, dict[str, float]]:
    """The runs' ``{row: {seed: value}}`` tables under ``key`` as one; a seed twice in a row is an error."""
    pooled: dict[str, dict[str, float]] = {}
    where: dict[tuple[str, str], Path] = {}
    for run in runs:
        for row, values in (run.summary.get(key) or {}).items():
            for seed, value in values.items():
                if (row, str(seed)) in where:
                    raise PipelineError(f"seed {seed} of row '{row}' is in both {where[row, str(seed)]} and {run.dir}; "
                                        "pool runs of different seeds")
                where[row, str(seed)] = run.dir
                pooled.setdefault(row, {})[str(seed)] = float(value)
    return pooled


def write_report(run_dirs: list[Path], out: Path) -> dict:
    """Write ``out/report.md``, ``out/report.html`` and their pictures; returns their paths, the
    results rows (mean, std, paired difference) and the inputs that were not found."""
    runs = load_runs([Path(d) for d in run_dirs])
    first = runs[0].summary
    baseline = first.get("baseline_row", "baseline")
    table = pool_seeds(runs, "rows")
    if not table:
        raise PipelineError(f"the {SUMMARY} of {runs[0].dir} has no 'rows' (ego score per row and seed); "
                            "it was written by an older demo")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("curves-*.png"), *out.glob("gallery-*.png"), out / "per-class-ap.png"]:
        old.unlink(missing_ok=True)  # an earlier report's pictures: never referenced by this one
    try:
        results = compare_rows(table, baseline)
        pretrain = pool_seeds(runs, "pretrain_val_top1")
        pretrain_rows = compare_rows(pretrain, baseline) if baseline in pretrain else []
    except ValueError as e:
        raise PipelineError(str(e)) from None
    missing: list[str] = []
    body = "\n\n".join(section for section in [
        f"# Ego-Exo report\n\nRuns: {', '.join(f'`{r.dir}`' for r in runs)}. Ego task: {first.get('ego_task', '?')}.",
        results_section(results, baseline, first.get("chance_mAP"), pretrain_rows),
        curves_section(runs, out, missing),
        per_class_ap_section(runs, out, missing),
        signals_section(runs[0], out, missing),
        teachers_section(runs),
        timing_section(runs),
    ] if section)
    if missing:
        body += "\n\n## Not found\n\n" + "\n".join(f"- `{m}`" for m in missing)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(body + "\n")
    html_path.write_text(render_html(body))
    return {"markdown": str(md_path), "html": str(html_path), "images": images_in(body),
            "results": [asdict(r) for r in results], "missing": missing}


def render_html(markdown_text: str) -> str:
    import markdown

    html = markdown.markdown(markdown_text, extensions=["tables"])
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Ego-Exo report</title>"
            f"<style>{CSS}</style></head>\n<body>\n{html}\n</body></html>\n")


def images_in(markdown_text: str) -> list[str]:
    """The picture paths a markdown text references, in order."""
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown_text)


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def points(x: float, sign: bool = False) -> str:
    """A fraction as percentage points (``+`` shown for differences)."""
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:{'+' if sign else ''}.2f}"


# -- results ----------------------------------------------------------------------------------------


def results_section(rows: list[RowStats], baseline: str, chance: float | None, pretrain: list[RowStats]) -> str:
    parts = ["## Results", "Ego task score over seeds (mean ± sample std, in points); each row's difference "
             f"to `{baseline}` is paired over the seeds both have, with a 95 % t-interval.",
             stats_table(rows, "ego mAP", baseline), chance_line(chance), "\n".join(verdict_lines(rows, baseline))]
    seeds = sorted({s for r in rows for s in r.values}, key=seed_order)
    parts.append("Per seed:\n\n" + md_table(["row", *[f"seed {s}" for s in seeds]],
                                            [[r.name, *[points(r.values.get(s)) for s in seeds]] for r in rows]))
    if pretrain:
        parts.append("Pre-training task (third-person validation clips, top-1):\n\n" + stats_table(pretrain, "top-1", baseline))
    return "\n\n".join(p for p in parts if p)


def stats_table(rows: list[RowStats], what: str, baseline: str) -> str:
    body = []
    for r in rows:
        d = r.difference
        if d is None:
            diff, verdict = "-", "(baseline)" if r.name == baseline else "no seed shared with the baseline"
        else:
            interval = "" if d.verdict == TOO_FEW else f" [{points(d.low, True)}, {points(d.high, True)}]"
            diff, verdict = f"{points(d.mean, True)}{interval}", d.verdict
        body.append([r.name, r.n, f"{points(r.mean)} ± {points(r.std)}", diff, verdict])
    return md_table(["row", "seeds", f"{what} (mean ± std)", "− baseline (95 % CI)", "verdict"], body)


def chance_line(chance: float | None) -> str:
    return f"Chance: {points(chance)}." if chance is not None else ""


def verdict_lines(rows: list[RowStats], baseline: str) -> list[str]:
    """One sentence per row that says, in words, how it compares with the baseline, after a
    headline on whether Ego-Exo (row ``egoexo``) beats it here."""
    lines = []
    for r in rows:
        d = r.difference
        if d is None:
            continue
        if r.name == METHOD_ROW:
            wins = d.verdict == EXCEEDS and d.mean > 0
            lines.insert(0, f"**Ego-Exo {'beats' if wins else 'does not beat'} the `{baseline}` row on these runs"
                            f"{' beyond seed noise' if wins else ''}.**\n")
        if d.verdict == TOO_FEW:
            lines.append(f"- `{r.name}` differs by {points(d.mean, True)} points on one shared seed, "
                         "which cannot be told from seed noise.")
            continue
        measured = (f"{points(d.mean, True)} points, 95 % CI [{points(d.low, True)}, {points(d.high, True)}] "
                    f"over {d.n} shared seeds")
        if d.verdict == EXCEEDS:
            lines.append(f"- `{r.name}` scores {'above' if d.mean > 0 else 'below'} `{baseline}` beyond seed noise: {measured}.")
        else:
            lines.append(f"- `{r.name}` does not differ from `{baseline}` beyond seed noise: {measured}.")
    return lines


# -- training curves --------------------------------------------------------------------------------


def training_histories(runs: list[Run], stage: str, missing: list[str]) -> dict[str, list[dict]]:
    """``{run key: history}`` of every ``stage`` ("pretrain" / "finetune") training run; a pre-trained
    student shared by several rows (Ego-Exo and Ego-Exo*) is drawn once, under its first key."""
    histories, seen = {}, set()
    for run in runs:
        for key, paths in (run.summary.get("runs") or {}).items():
            folder = run.path(paths.get(stage))
            if folder is None or folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            f = folder / "history.json"
            if f.is_file():
                histories[key] = json.loads(f.read_text())
            else:
                missing.append(str(f))
    return histories


def curves_section(runs: list[Run], out: Path, missing: list[str]) -> str:
    parts = ["## Training curves", "Mean of each loss term per epoch, one line per run, one colour per row "
             "(TensorBoard: each training run's `tb/` folder has them per step, with lr, clips/s and data wait)."]
    for stage, title in (("pretrain", "Pre-training (third-person clips)"), ("finetune", "Fine-tuning (first-person clips)")):
        histories = training_histories(runs, stage, missing)
        if histories:
            name = f"curves-{stage}.png"
            plot_curves(histories, out / name, title)
            parts.append(f"### {title}\n\n![{title} loss curves]({name})")
    return "\n\n".join(parts)


def plot_curves(histories: dict[str, list[dict]], path: Path, title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: the Agg renderer, no global backend state
    from matplotlib.ticker import MaxNLocator

    terms = sorted({k for h in histories.values() for rec in h for k in rec if k.startswith("loss")},
                   key=lambda k: (k != "loss", k))
    cols = min(3, len(terms))
    rows = -(-len(terms) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = row_colours(histories)
    for ax, term in zip(axes, terms):
        labelled = set()
        for key, history in histories.items():
            row = key.split("/")[0]
            points_ = [(rec["epoch"], rec[term]) for rec in history if term in rec]
            if points_:
                ax.plot(*zip(*points_), color=colours[row], label=None if row in labelled else row, lw=1.2)
                labelled.add(row)
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(terms):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)


def row_colours(keyed: dict) -> dict[str, tuple]:
    from matplotlib import colormaps

    rows = list(dict.fromkeys(key.split("/")[0] for key in keyed))
    return {row: colormaps["tab10"](i % 10) for i, row in enumerate(rows)}


# -- per-class AP -----------------------------------------------------------------------------------


def predictions_file(run: Run, metrics_rel: str, missing: list[str]) -> Path | None:
    metrics_path = run.path(metrics_rel)
    if not metrics_path.is_file():
        missing.append(str(metrics_path))
        return None
    named = json.loads(metrics_path.read_text()).get("predictions")
    # Relative to the run directory, or else where evaluate puts it: next to the metrics file.
    for candidate in ([run.path(named)] if named else []) + [metrics_path.with_suffix(".predictions.npz")]:
        if candidate.is_file():
            return candidate
    missing.append(str(metrics_path.with_suffix(".predictions.npz")))
    return None


def targets_of(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Multi-hot [N, C] as stored, or single-label ids [N] (-1: none) as one-hot."""
    if labels.ndim == 2:
        return labels.astype(np.float32)
    return (labels[:, None] == np.arange(num_classes)).astype(np.float32)


def per_class_ap(runs: list[Run], missing: list[str]) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """(class names, the test clips' targets [N, C], ``{row: per-class AP averaged over its seeds}``)."""
    from student.metrics import per_class_average_precision

    per_row: dict[str, list[np.ndarray]] = {}
    classes, test_targets = [], np.zeros((0, 0))
    for run in runs:
        for key, paths in (run.summary.get("runs") or {}).items():
            f = predictions_file(run, paths["metrics"], missing) if paths.get("metrics") else None
            if f is None:
                continue
            with np.load(f) as p:
                scores = p["scores_action"]
                targets = targets_of(p["labels"], scores.shape[1])
                names = [str(c) for c in p["classes"]] if "classes" in p else [f"class {i}" for i in range(scores.shape[1])]
            classes, test_targets = names, targets
            per_row.setdefault(key.split("/")[0], []).append(per_class_average_precision(scores, targets))
    with warnings.catch_warnings():  # a class without a positive stays NaN, without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return classes, test_targets, {row: np.nanmean(np.stack(aps), axis=0) for row, aps in per_row.items()}


def per_class_ap_section(runs: list[Run], out: Path, missing: list[str]) -> str:
    classes, targets, ap = per_class_ap(runs, missing)
    if not ap:
        return "## Per-class AP of the ego task\n\nNo predictions found."
    positives, chance = targets.sum(axis=0), targets.mean(axis=0)  # an uninformed scorer's AP is the positive rate
    keep = positives > 0
    table = md_table(["class", "test clips with it", "chance", *ap],
                     [[c, int(positives[i]), points(chance[i]), *[points(a[i]) for a in ap.values()]]
                      for i, c in enumerate(classes) if keep[i]]
                     + [["**mean (mAP)**", "", points(chance[keep].mean()),
                         *[f"**{points(np.nanmean(a[keep]))}**" for a in ap.values()]]])
    plot_per_class_ap(classes, keep, chance, ap, out / "per-class-ap.png")
    return ("## Per-class AP of the ego task\n\nAP of each class with a positive in the test clips "
            "(sklearn's average precision; each row averaged over its seeds; chance: the class's positive "
            "rate, black ticks in the picture).\n\n" + table
            + "\n\n![per-class AP](per-class-ap.png)")


def plot_per_class_ap(classes: list[str], keep: np.ndarray, chance: np.ndarray, ap: dict[str, np.ndarray],
                      path: Path) -> None:
    from matplotlib.figure import Figure

    shown = np.flatnonzero(keep)
    fig = Figure(figsize=(max(6.0, 0.9 * len(shown) * max(1, len(ap)) / 3), 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(ap)
    colours = row_colours(ap)
    for k, (row, values) in enumerate(ap.items()):
        ax.bar(np.arange(len(shown)) + k * width, 100 * values[shown], width, label=row, color=colours[row])
    ax.hlines(100 * chance[shown], np.arange(len(shown)) - width / 2, np.arange(len(shown)) + 0.8 - width / 2,
              colors="black", lw=1.5, label="chance")
    ax.set_xticks(np.arange(len(shown)) + 0.4 - width / 2, [classes[i] for i in shown], rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 118)  # room for the legend above the bars
    ax.legend(fontsize=8, ncols=min(5, len(ap) + 1), loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=90)


# -- teacher signals --------------------------------------------------------------------------------


def signals_section(run: Run, out: Path, missing: list[str]) -> str:
    from pipeline.inspect import signal_stats
    from pipeline.io.store import open_store

    store_path = run.path(run.summary.get("signals_store"))
    if store_path is None or not store_path.exists():
        missing.append(str(store_path))
        return "## Teacher signals\n\nNo signals store found."
    stats = signal_stats(store_path)
    ranking = stats.pop("classes_by_ego_score", None)
    store = open_store(store_path)
    object_names = store.attrs.get("teachers", {}).get("object", {}).get("classes")
    parts = [f"## Teacher signals\n\nThe signals store `{store_path.resolve()}`, its completed rows (statistics computed "
             "with dask in float32)."]
    hist = stats.pop("object_top1_hist", None)
    parts.append(md_table(["statistic", "value"], [[k, round(v, 4) if isinstance(v, float) else v]
                                                     for k, v in stats.items()]))
    if hist:
        share = np.asarray(hist, dtype=float) / max(sum(hist), 1)
        top = [k for k in np.argsort(-share)[:5] if share[k] > 0]
        parts.append("Most frequent top-1 object classes: " + ", ".join(
            f"{object_names[k] if object_names else k} {100 * share[k]:.1f} %" for k in top) + ".")
    if isinstance(ranking, list) and ranking:
        parts.append("### Classes by mean Ego-Score\n\nThe paper's sanity check: hand-centric classes should rank "
                     "highest.\n\n" + md_table(["rank", "class", "clips", "mean Ego-Score", "example clip"], [
                         [i, r["class"], r["clips"], f"{r['ego_score']:.3f}", f"`{r['example_clip']}`"]
                         for i, r in enumerate(ranking, 1)]))
    elif ranking:
        parts.append(f"Classes by mean Ego-Score: {ranking}.")
    parts.append(gallery(run, store, gallery_clips(store, ranking), out, missing))
    return "\n\n".join(parts)


def gallery_clips(store, ranking) -> list[str]:
    """Clips of the highest- and lowest-ranked classes (Ego-Score), else the first completed ones."""
    from pipeline.io.store import OK

    if isinstance(ranking, list) and ranking:
        ends = ranking[: GALLERY_CLIPS // 2] + ranking[::-1][: GALLERY_CLIPS - GALLERY_CLIPS // 2]
        return list(dict.fromkeys(r["example_clip"] for r in ends))
    ids = store.clip_ids()
    return ids[store.status() == OK][:GALLERY_CLIPS].tolist()


def gallery(run: Run, store, clips: list[str], out: Path, missing: list[str]) -> str:
    from pipeline.inspect import draw_clip

    video_root = run.path(run.summary.get("video_root"))
    parts = ["### Gallery\n\nTop: teacher frames with hand (green) and object (blue) boxes, each hand's contact "
             "state (N none, S self, O other person, P portable object, F stationary object) and the frame's top "
             "object class. Bottom: the student's centre crop with the interaction map it is trained on "
             "(7 x 7 cells; green hand, blue object, brighter = higher score)."]
    for i, clip in enumerate(clips, 1):
        name = f"gallery-{i}.png"
        try:
            shown = draw_clip(store, clip, out / name, str(video_root) if video_root else None)
        except PipelineError as e:
            missing.append(f"{clip}: {e}")
            continue
        objects = ", ".join(f"{o} {p:.2f}" for o, p in shown["top_objects"])
        parts.append(f"**`{clip}`** ({shown['label']}): Ego-Score {shown['ego_score']:.2f}; top objects {objects}."
                     f"\n\n![teacher signals of {clip}]({name})")
    return "\n\n".join(parts)


# -- teachers and time ------------------------------------------------------------------------------


def teachers_section(runs: list[Run]) -> str:
    values: dict[tuple[str, str], list] = {}
    for j, run in enumerate(runs):
        for teacher, metrics in (run.summary.get("teachers") or {}).items():
            for metric, v in metrics.items():
                values.setdefault((teacher, metric), [None] * len(runs))[j] = v
    if not values:
        return ""
    rows = [[t, m, *["-" if v is None else round(v, 4) for v in vs]] for (t, m), vs in values.items()]
    return "## Teachers (held-out)\n\n" + md_table(["teacher", "metric", *[r.dir.name for r in runs]], rows)


def timing_section(runs: list[Run]) -> str:
    stages = list(dict.fromkeys(k for r in runs for k in (r.summary.get("seconds") or {})))
    if not stages:
        return ""
    rows = [[s, *[_seconds(r.summary["seconds"].get(s), s in r.summary.get("reused", ())) for r in runs]] for s in stages]
    text = "## Time of each stage (seconds)\n\n" + md_table(["stage", *[r.dir.name for r in runs]], rows)
    steps = list(dict.fromkeys(k for r in runs for k in (r.summary.get("step_seconds") or {})))
    if steps:
        jobs = sorted({str(r.summary.get("jobs", 1)) for r in runs})
        rows = [[s, *[_seconds((r.summary.get("step_seconds") or {}).get(s), s in r.summary.get("reused", ()))
                      for r in runs]] for s in steps]
        text += (f"\n\nEach run of a stage ({' / '.join(jobs)} at a time, each in its own process; "
                 "'reused': finished by an earlier run, so the time is that of resuming it):\n\n"
                 + md_table(["run", *[r.dir.name for r in runs]], rows))
    return text


def _seconds(v, reused: bool = False) -> str:
    return "-" if v is None else f"{v:.0f}" + (" (reused)" if reused else "")
