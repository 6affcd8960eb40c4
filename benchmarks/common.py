"""Rows of benchmark results and the one results file they go to.

Every benchmark measures ours and its reference in the same run and hands back :class:`Row`
objects; :func:`write_results` merges them into ``benchmarks/results/<machine>-<date>.json``
(rows of ``{name, value, reference, ratio, target, target_met}`` plus the unit, a note and
the load average when measured) and writes the same rows as a markdown table beside it
(``.md``), which the README shows. A row measured again the same day replaces the old one.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One benchmark: ``value`` of ours and ``reference`` measured in the same run, in ``unit``.

    ``ratio`` defaults to value / reference. ``target`` is a condition on the ratio
    (``">= 0.9"``, ``"<= 1.05"``) or None (reported only); ``target_met`` follows from it and
    is None when there is nothing to compare (a reference that could not run: ``note`` says why).
    """

    name: str
    value: float | None
    reference: float | None
    unit: str = ""
    target: str | None = None
    note: str = ""
    ratio: float | None = None
    target_met: bool | None = field(default=None, init=False)
    load_avg: float = field(default_factory=lambda: round(os.getloadavg()[0], 2), init=False)

    def __post_init__(self):
        if self.ratio is None and _finite(self.value) and _finite(self.reference) and self.reference:
            self.ratio = self.value / self.reference
        if self.target is not None and _finite(self.ratio):
            op, bound = _parse_target(self.target)
            self.target_met = bool(self.ratio >= bound if op == ">=" else self.ratio <= bound)

    def as_dict(self) -> dict:
        d = asdict(self)
        for key in ("value", "reference", "ratio"):
            if _finite(d[key]):
                d[key] = float(f"{d[key]:.6g}")  # six significant digits, whatever the scale
        return d


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _parse_target(target: str) -> tuple[str, float]:
    m = re.fullmatch(r"\s*(>=|<=)\s*([0-9.]+)\s*", target)
    if not m:
        raise ValueError(f"a target is '>= X' or '<= X' on the ratio, got {target!r}")
    return m.group(1), float(m.group(2))


def machine_info() -> dict:
    import torch

    return {"node": platform.node(), "cpu": _cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(machine: str | None = None) -> str:
    """``machine`` (default: the host name) made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", machine or platform.node() or "machine")


def results_path(machine: str | None = None, out_dir: Path | str = RESULTS_DIR, date: str | None = None) -> Path:
    return Path(out_dir) / f"{machine_name(machine)}-{date or datetime.date.today().isoformat()}.json"


def write_results(rows: list[Row], machine: str | None = None, out_dir: Path | str = RESULTS_DIR) -> Path:
    """Merge ``rows`` into the day's results file of ``machine`` (default: the host name) and
    rewrite its markdown table; returns the JSON path."""
    path = results_path(machine, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {r["name"]: r for r in old.get("rows", [])}
    for row in rows:
        merged[row.name] = {**row.as_dict(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    doc = {"machine": machine_name(machine), "date": path.stem[-10:], "host": machine_info(),
           "rows": list(merged.values())}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
    path.with_suffix(".md").write_text(markdown_table(doc["rows"]) + "\n")
    return path


def _fmt(x) -> str:
    if not _finite(x):
        return "-"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table: value and reference with their unit, ratio, target, met."""
    lines = ["| benchmark | ours | reference | ratio | target | met | load | note |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = f" {r['unit']}" if r.get("unit") else ""
        met = {True: "yes", False: "**no**", None: "-"}[r.get("target_met")]
        value = _fmt(r["value"]) + (unit if _finite(r["value"]) else "")
        reference = _fmt(r["reference"]) + (unit if _finite(r["reference"]) else "")
        lines.append(f"| {r['name']} | {value} | {reference} | {_fmt(r['ratio'])} | {r.get('target') or 'report'} "
                     f"| {met} | {r.get('load_avg', '-')} | {r.get('note', '')} |")
    return "\n".join(lines)


def add_result_args(ap: argparse.ArgumentParser) -> None:
    """``--machine`` and ``--results`` (where the rows go) for a benchmark's command line."""
    ap.add_argument("--machine", help="name of the results file's machine (default: the host name)")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the results files")
    ap.add_argument("--no-results", action="store_true", help="print only, write no results file")


def report(rows: list[Row], args: argparse.Namespace) -> None:
    """Print the rows, and write them to the results file unless ``--no-results``."""
    for r in rows:
        met = {True: "PASS", False: "FAIL", None: "-"}[r.target_met]
        ratio = f"{r.ratio:.3f}" if _finite(r.ratio) else "-"
        print(f"  {r.name}: {_fmt(r.value)} vs {_fmt(r.reference)} {r.unit}, ratio {ratio}"
              f" (target {r.target or 'report'}) -> {met}" + (f"  [{r.note}]" if r.note else ""))
    if not args.no_results:
        print(f"wrote {write_results(rows, args.machine, args.results)}")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB.

    On Linux the ``VmHWM`` of ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` keeps the peak
    of the process this one was started from (a child of a parent holding 330 MB reported 330 MB,
    its ``VmHWM`` 11 MB), which would floor every benchmark child at its parent's memory.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:  # no /proc (macOS)
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
