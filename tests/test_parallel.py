"""pipeline.parallel.run_chains: the demo's way of running stages side by side, through real processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.parallel import Command, run_chains, usable_cores

REPO = Path(__file__).resolve().parents[1]


def record(label: str, events, seconds: float = 0.3, code: int = 0) -> Command:
    """A process that appends 'start/end LABEL TIME THREADS' lines to ``events`` around a sleep."""
    script = (
        "import os, sys, time\n"
        f"f = open({str(events)!r}, 'a'); f.write('start {label} %f %s\\n' % (time.time(), os.environ['OMP_NUM_THREADS'])); f.flush()\n"
        f"print('hello from {label}')\n"
        f"time.sleep({seconds})\n"
        f"f.write('end {label} %f -\\n' % time.time()); f.close()\n"
        f"sys.exit({code})\n"
    )
    return Command(label, ("-c", script))


def read(events):
    out = []
    for line in events.read_text().splitlines():
        kind, label, t, threads = line.split()
        out.append((kind, label, float(t), threads))
    return out


def test_chains_run_in_order_at_most_jobs_at_a_time(tmp_path):
    events = tmp_path / "events.txt"
    chains = [[record("a1", events), record("a2", events)], [record("b1", events)], [record("c1", events)]]
    seconds = run_chains(chains, jobs=2, logs=tmp_path / "logs")
    ev = read(events)
    assert sorted(seconds) == ["a1", "a2", "b1", "c1"] and all(0.25 < s < 10 for s in seconds.values())
    # within a chain: a2 starts after a1 ended
    t = {(k, label): tt for k, label, tt, _ in ev}
    assert t[("start", "a2")] >= t[("end", "a1")]
    # never more than 2 processes alive, and 2 at once at some point (a1 with b1)
    alive, most = 0, 0
    for kind, *_ in sorted(ev, key=lambda e: e[2]):
        alive += 1 if kind == "start" else -1
        most = max(most, alive)
    assert most == 2
    # c1 waits for a free slot: it starts after the first chain to finish ends
    assert t[("start", "c1")] >= min(t[("end", "a1")], t[("end", "b1")])
    # each process gets cores // jobs threads; its output goes to its own log, headed by the command
    assert {threads for kind, _, _, threads in ev if kind == "start"} == {str(max(1, usable_cores() // 2))}
    log = (tmp_path / "logs" / "b1.log").read_text()
    assert log.splitlines()[0].startswith("$ ") and "hello from b1" in log


def test_one_job_runs_everything_in_sequence(tmp_path):
    events = tmp_path / "events.txt"
    run_chains([[record("a", events, 0.1)], [record("b", events, 0.1)]], jobs=1, logs=tmp_path / "logs")
    kinds = [(k, label) for k, label, _, _ in sorted(read(events), key=lambda e: e[2])]
    assert kinds == [("start", "a"), ("end", "a"), ("start", "b"), ("end", "b")]


def test_a_failure_stops_the_others_and_names_its_log(tmp_path, capsys):
    events = tmp_path / "events.txt"
    chains = [[record("bad", events, 0.1, code=3), record("after-bad", events)], [record("slow", events, 60)]]
    t0 = time.time()
    with pytest.raises(PipelineError) as e:
        run_chains(chains, jobs=2, logs=tmp_path / "logs")
    assert time.time() - t0 < 30  # 'slow' was stopped, not waited for
    msg = str(e.value)
    assert "bad failed (exit code 3)" in msg and str(tmp_path / "logs" / "bad.log") in msg
    assert "hello from bad" in capsys.readouterr().err  # the failed log's last lines
    labels = {label for _, label, _, _ in read(events)}
    assert "after-bad" not in labels  # the rest of the failed chain never started
    assert ("end", "slow") not in {(k, label) for k, label, _, _ in read(events)}


def test_command_shell_is_what_a_user_types():
    assert Command.stage("x", "evaluate", "cfg.yaml").shell() == "pipeline run evaluate --config cfg.yaml"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie no one reaped has stopped too


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_or_killed_parent_leaves_no_run_behind(tmp_path, sig):
    """SIGTERM to the demo stops its runs and exits 143; SIGKILL (or the OOM killer) leaves the
    runs to the kernel, which sends them SIGTERM (PR_SET_PDEATHSIG)."""
    pidfile = tmp_path / "child.pid"
    child = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
             "from pipeline.parallel import die_with_parent\n"
             "die_with_parent()\n"
             f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)\n")
    parent = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
              "from pipeline.errors import PipelineError\n"
              "from pipeline.parallel import Command, run_chains\n"
              "try:\n"
              f"    run_chains([[Command('sleeper', ('-c', {child!r}))]], 1, {str(tmp_path / 'logs')!r})\n"
              "except PipelineError as e:\n"
              "    print(e, file=sys.stderr); sys.exit(e.exit_code)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not pidfile.exists() or not pidfile.read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    pid = int(pidfile.read_text())
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    deadline = time.time() + 20
    while _alive(pid):
        assert time.time() < deadline, "the run outlived the process that started it"
        time.sleep(0.1)


def test_a_rerun_appends_to_the_log(tmp_path):
    events = tmp_path / "events.txt"
    for _ in range(2):
        run_chains([[record("a", events, 0.05)]], jobs=1, logs=tmp_path / "logs")
    log = (tmp_path / "logs" / "a.log").read_text()
    lines = log.splitlines()
    assert lines.count("hello from a") == 2 and sum(line.startswith("# started ") for line in lines) == 2
