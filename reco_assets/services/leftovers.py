"""Dagster processes that `make run` leaves behind in its process group after `dagster dev` exits: a code server
that waits on a run worker, a run worker that defers Ctrl+C to its first step. Dagster-free, so that the stop
starts in a fraction of a second.

`python -m reco_assets.services.leftovers PGID MARK` is `make run`'s stop: it kills the leftovers still alive after
1 s and exits with status 3 when a run worker was among them (its run must then be marked canceled:
`reco-assets cancel-orphaned-runs`)."""

import os
import signal
import sys
import time
from pathlib import Path

# What Dagster's processes look like on a command line (the run worker and its resource tracker are
# multiprocessing children of the code server).
DAGSTER_PROCESS = ("dagster", "multiprocessing")
# The run worker's own: a process that multiprocessing spawned (its resource tracker carries no such flag).
RUN_WORKER = "--multiprocessing-fork"
KILLED_A_RUN_WORKER = 3


def group_members(pgid: int) -> dict[int, str]:
    """pid → command line of every live process of process group `pgid`."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found[int(stat.parent.name)] = cmdline.strip()
    return found


def marked(pid: int, mark: str) -> bool:
    """Whether the process's environment carries `mark` (NAME=value), as everything `make run` started does."""
    try:
        return mark.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def kill_leftovers(pgid: int, mark: str, grace_s: float, log) -> dict[int, str]:
    """SIGKILL the Dagster processes of group `pgid` whose environment carries `mark` and that are still alive
    after `grace_s` seconds; return their pids and command lines. Services started from the same shell run in
    sessions of their own, and other members of the group (a `tee` of the output, say) carry no Dagster command
    line: both are spared."""
    own = {os.getpid(), os.getppid()}

    def leftovers() -> dict[int, str]:
        return {pid: command for pid, command in group_members(pgid).items()
                if pid not in own and any(name in command for name in DAGSTER_PROCESS) and marked(pid, mark)}

    deadline = time.monotonic() + grace_s
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = leftovers()
    for pid, command in killed.items():
        log(f"[run] {command[:100]} (pid {pid}) was still running after Dagster's exit: killing it")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


def started_at(pid: int) -> float | None:
    """When the process started (epoch seconds), or None when it does not run."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    group, run_mark = sys.argv[1:]
    killed = kill_leftovers(int(group), run_mark, 1.0, lambda message: print(message, file=sys.stderr))
    sys.exit(KILLED_A_RUN_WORKER if any(RUN_WORKER in command for command in killed.values()) else 0)
