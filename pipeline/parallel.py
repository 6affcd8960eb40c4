"""Run independent chains of commands side by side on the cores, each command in its own process.

The demo's students, teachers and fine-tunes are small: a 2-core CPU runs two of them with one
thread each 1.3-1.4x faster than one after the other with two threads (PyTorch's intra-op threads
split a tiny model's convolutions poorly). Each command is a ``pipeline run STAGE --config FILE``
the user could type; its output goes to a log file, and one progress bar counts the commands.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Command:
    """One process: ``argv`` after the Python interpreter, named ``label`` in the log file and the bar."""

    label: str
    argv: tuple[str, ...]

    @classmethod
    def stage(cls, label: str, stage: str, config: str | Path) -> "Command":
        """``pipeline run STAGE --config CONFIG``."""
        return cls(label, ("-m", "pipeline.cli", "run", stage, "--config", str(config)))

    def shell(self) -> str:
        """The command as a user would type it."""
        if self.argv[:2] == ("-m", "pipeline.cli"):
            return " ".join(("pipeline", *self.argv[2:]))
        return " ".join((sys.executable, *self.argv))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def run_chains(chains: list[list[Command]], jobs: int, logs: str | Path, desc: str = "runs") -> dict[str, float]:
    """Run every chain's commands in order, up to ``jobs`` chains at once, in the order given.

    Each process gets ``cores // jobs`` threads (``OMP_NUM_THREADS``) and writes its output to
    ``logs/<label>.log``. Returns the seconds each command took, by label. When one fails, the
    others are stopped (the stages resume on a rerun) and a ``PipelineError`` names its log and
    prints its last lines.
    """
    from pipeline.stages.common import progress

    if jobs < 1:
        raise PipelineError("the number of parallel jobs must be at least 1")
    logs = Path(logs)
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, usable_cores() // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PIPELINE_NO_PROGRESS": "1"}
    waiting = [list(c) for c in chains if c]
    running: dict[str, tuple[subprocess.Popen, list[Command], float, object]] = {}
    seconds: dict[str, float] = {}
    bar = progress(total=sum(len(c) for c in waiting), desc=desc, unit="run")

    def start(chain: list[Command]) -> None:
        cmd = chain.pop(0)
        log = open(logs / f"{cmd.label}.log", "w")
        log.write(f"$ {cmd.shell()}\n")
        log.flush()
        proc = subprocess.Popen([sys.executable, *cmd.argv], stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)
        running[cmd.label] = (proc, chain, time.time(), log)
        bar.set_postfix_str(", ".join(running), refresh=True)

    def stop_all() -> None:
        for proc, _, _, log in running.values():
            proc.terminate()
        for proc, _, _, log in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        running.clear()

    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                start(waiting.pop(0))
            time.sleep(0.2)
            for label, (proc, chain, t0, log) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                log.close()
                del running[label]
                if rc != 0:
                    stop_all()
                    bar.close()
                    path = logs / f"{label}.log"
                    tail = path.read_text(errors="replace").splitlines()[-15:]
                    print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)
                    raise PipelineError(f"{label} failed (exit code {rc}); its log: {path}. Finished steps are kept: "
                                        f"rerun to resume")
                seconds[label] = round(time.time() - t0, 1)
                bar.update(1)
                bar.write(f"-- {label}: {seconds[label]:.0f} s")
                if chain:
                    start(chain)
                else:
                    bar.set_postfix_str(", ".join(running), refresh=True)
    except BaseException:
        stop_all()
        bar.close()
        raise
    bar.close()
    return seconds
