"""Run independent chains of commands side by side on the cores, each command in its own process.

The demo's students, teachers and fine-tunes are small: on a 2-core CPU two pre-trainings side
by side, one thread each, took 1.26x less time than one after the other on two threads (PyTorch's
intra-op threads split a tiny model's convolutions poorly), and the whole demo 1.16x less. Each command is a ``pipeline run STAGE --config FILE``
the user could type; its output goes to a log file, and one progress bar counts the commands.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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


class Stopped(PipelineError):
    """The demo was told to stop (SIGTERM, SIGHUP): its runs are stopped too."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}; finished steps are kept: rerun to resume")
        self.exit_code = 128 + signum


PARENT_ENV = "PIPELINE_PARENT_PID"


def die_with_parent() -> None:
    """Called by ``pipeline.cli`` at start: a run started by ``run_chains`` (``PIPELINE_PARENT_PID``
    set) gets SIGTERM when that process dies, even by SIGKILL or the OOM killer (Linux
    ``PR_SET_PDEATHSIG``), and exits at once if it already has; so no run trains on unseen."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the parent's own cleanup still stops its runs
        return
    if os.getppid() != int(parent):  # the parent died before the line above
        sys.exit(128 + signal.SIGTERM)


def _raise_stopped(signum, frame) -> None:
    raise Stopped(signum)


def run_chains(chains: list[list[Command]], jobs: int, logs: str | Path, desc: str = "runs") -> dict[str, float]:
    """Run every chain's commands in order, up to ``jobs`` chains at once, in the order given.

    Each process gets ``cores // jobs`` threads (``OMP_NUM_THREADS``) and appends its output,
    unbuffered, to ``logs/<label>.log`` after a ``$ command`` line. Returns the seconds each
    command took, by label. When one fails, the others are stopped (the stages resume on a
    rerun) and a ``PipelineError`` names its log after printing its last lines. Ctrl-C, SIGTERM
    and SIGHUP stop every run before the error goes up; a run whose parent dies gets SIGTERM.
    """
    from pipeline.stages.common import progress

    if jobs < 1:
        raise PipelineError("the number of parallel jobs must be at least 1")
    labels = [c.label for chain in chains for c in chain]
    if len(set(labels)) != len(labels):
        raise ValueError(f"run labels must be unique (they name the logs): {labels}")
    logs = Path(logs)
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, usable_cores() // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PIPELINE_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
    waiting = [list(c) for c in chains if c]
    running: dict[str, tuple[subprocess.Popen, list[Command], float, object]] = {}
    seconds: dict[str, float] = {}
    bar = progress(total=len(labels), desc=desc, unit="run")

    def start(chain: list[Command]) -> None:
        cmd = chain.pop(0)
        log = open(logs / f"{cmd.label}.log", "a")
        try:
            if log.tell():
                log.write("\n")
            log.write(f"$ {cmd.shell()}\n# started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            log.flush()
            proc = subprocess.Popen([sys.executable, *cmd.argv], stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL)
        except BaseException:
            log.close()
            raise
        running[cmd.label] = (proc, chain, time.time(), log)
        bar.set_postfix_str(", ".join(running), refresh=True)

    def stop_all() -> None:
        for proc, _, _, _ in running.values():
            proc.terminate()
        for proc, _, _, log in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        running.clear()

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                handlers[sig] = signal.signal(sig, _raise_stopped)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                start(waiting.pop(0))
            time.sleep(0.2)
            ended = {label: rc for label, (proc, *_) in running.items() if (rc := proc.poll()) is not None}
            done = {label: running.pop(label) for label in ended}
            for _, _, _, log in done.values():
                log.close()
            failed = [(label, rc) for label, rc in ended.items() if rc != 0]
            if failed:  # every exit code is read first: no next step is started only to be stopped
                stop_all()
                bar.close()
                label, rc = failed[0]
                path = logs / f"{label}.log"
                tail = path.read_text(errors="replace").splitlines()[-15:]
                print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)
                raise PipelineError(f"{label} failed (exit code {rc}); its log: {path}. Finished steps are kept: "
                                    f"rerun to resume")
            for label, (_, chain, t0, _) in done.items():
                seconds[label] = round(time.time() - t0, 1)
                bar.update(1)
                bar.write(f"-- {label}: {seconds[label]:.0f} s")
                if chain:
                    start(chain)
            if done:
                bar.set_postfix_str(", ".join(running), refresh=True)
    except BaseException:
        stop_all()
        bar.close()
        raise
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
    bar.close()
    return seconds
