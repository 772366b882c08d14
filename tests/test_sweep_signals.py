"""Workers die with the sweep: SIGTERM and SIGKILL to the parent of a real
`deepx-sim sweep` leave no process behind, and the folder resumes cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.test_sweep import BASE

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid and stat[0] not in ("Z", "X"):
                kids.append(int(entry.name))
    return kids


def _wait_for(condition, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _sweep_file(tmp_path: Path) -> Path:
    """24 runs of about 0.15 s each: long enough to kill the sweep mid-way."""
    base = {**BASE, "duration_s": 30, "workload": {"arrivals": "poisson", "rate_per_s": 20}}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({"name": "long", "base": base, "repetitions": 4,
                                    "grid": {"conditions.bandwidth_mbps": list(range(1, 7))}}))
    return path


def _sweep_command(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "deepx_sim.cli", "sweep", str(tmp_path / "long.yaml"),
            "--out", str(tmp_path / "out"), "--workers", "2", "--quiet"]


# Ctrl-C: the terminal sends SIGINT to the whole process group, workers included
EXITS = {signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL, signal.SIGINT: 130}


@pytest.mark.parametrize("sig", list(EXITS), ids=["SIGTERM", "SIGKILL", "Ctrl-C"])
def test_killing_the_parent_leaves_no_worker_and_the_sweep_resumes(tmp_path: Path, sig: int) -> None:
    _sweep_file(tmp_path)
    runs = tmp_path / "out" / "runs"
    # output to files, not pipes: an orphan holding a pipe would hang the test, not fail it
    with open(tmp_path / "stderr.txt", "w") as err_file:
        proc = subprocess.Popen(_sweep_command(tmp_path), stdout=subprocess.DEVNULL, stderr=err_file,
                                start_new_session=True)  # its own process group, as in a terminal
    workers: list[int] = []
    try:
        assert _wait_for(lambda: len(_children(proc.pid)) >= 2 and runs.is_dir()
                         and len(list(runs.glob("*.json"))) >= 2, 60), "the sweep did not start"
        workers = _children(proc.pid)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        proc.wait(timeout=30)
        assert _wait_for(lambda: not any(_alive(pid) for pid in workers), 5), \
            f"workers still alive 5 s after the parent's {signal.Signals(sig).name}"
    finally:  # a failing run must not leave its processes behind
        for pid in [proc.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == EXITS[sig], err
    if sig != signal.SIGKILL:
        how = "terminated" if sig == signal.SIGTERM else "interrupted"
        assert err.strip() == (f"{how}: finished runs are saved in {tmp_path / 'out'}; "
                               "run the same command to resume")
    written = len(list(runs.glob("*.json")))
    time.sleep(0.5)
    assert len(list(runs.glob("*.json"))) == written < 24  # nobody writes any more
    if sig != signal.SIGKILL:
        return
    # resuming (once, to keep the suite short) completes the sweep and removes temporary files
    resumed = subprocess.run(_sweep_command(tmp_path), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "long: 24 of 24 runs ok" in resumed.stdout
    assert not [p.name for p in runs.iterdir() if p.name.startswith(".")]  # temporary files gone


def test_the_watcher_ends_a_process_whose_parent_was_killed(tmp_path: Path) -> None:
    """The portable fallback alone (no parent-death signal): a grandchild that
    runs watch_parent exits soon after its parent is SIGKILLed."""
    script = textwrap.dedent("""
        import os, sys, threading, time
        from deepx_sim.sweep import watch_parent
        parent = os.getpid()  # taken before the fork: the parent may die before the child runs
        child = os.fork()
        if child == 0:
            threading.Thread(target=watch_parent, args=(parent, 0.1), daemon=True).start()
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    grandchild = int(proc.stdout.readline())  # type: ignore[union-attr]
    assert _alive(grandchild)
    proc.kill()
    proc.wait()
    assert _wait_for(lambda: not _alive(grandchild), 3)
