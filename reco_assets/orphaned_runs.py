"""Runs left STARTED after their run worker died: a `dagster dev` stopped while a run was starting, a killed run
process, a reboot. Dagster's default run launcher does not check on run workers, so such a run would stay STARTED
for good and the sensor, which never overlaps runs of one hour, would not run its hour again. Marking it CANCELED
hands the hour back to the sensor (it retries cancelled hours) and is not relaunched by `run_retries`.

`python -m reco_assets.orphaned_runs PGID MARK` is `make run`'s stop. It imports Dagster (2-3 s) only when it has
killed a run worker, so that Ctrl+C returns within seconds."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from reco_assets.services import pid_alive

if TYPE_CHECKING:
    import dagster as dg

# What Dagster's processes look like on a command line (the run worker and its resource tracker are
# multiprocessing children of the code server).
DAGSTER_PROCESS = ("dagster", "multiprocessing")
# The run worker's own: a process that multiprocessing spawned (its resource tracker carries no such flag).
RUN_WORKER = "--multiprocessing-fork"


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


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the run's worker process and when it said so, from its "Started process for run" event."""
    import dagster as dg

    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        event = record.event_log_entry.dagster_event
        pid = event and event.engine_event_data and event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value), record.event_log_entry.timestamp
    return None


def worker_alive(pid: int, reported_at: float) -> bool:
    """Whether the process that reported itself as the run worker still runs (not another one that got its pid
    after a reboot: that one started after the report)."""
    started = started_at(pid) if pid_alive(pid) else None
    return started is not None and started <= reported_at + 1.0


def cancel_orphaned_runs(instance: dg.DagsterInstance, log) -> list[str]:
    """Mark CANCELED every STARTING or STARTED run whose recorded run worker is no longer alive; return their ids.
    (A run worker records its pid before its run is STARTED: killed in between, it leaves the run STARTING, which
    the sensor counts as in flight too.)"""
    import dagster as dg

    cancelled = []
    in_flight = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=in_flight)):
        worker = worker_pid(instance, run.run_id)
        if worker is None or worker_alive(*worker):
            continue
        pid = worker[0]
        instance.report_run_canceled(run, message=f"Run worker (pid {pid}) is gone: Dagster was stopped (Ctrl+C on "
                                                  "`make run`) or the process was killed. Marked canceled so that "
                                                  "the sensor runs its hour again.")
        log(f"[run] run {run.run_id} ({run.job_name}) lost its run worker (pid {pid}): marked canceled")
        cancelled.append(run.run_id)
    return cancelled


def stop_leftovers(pgid: int, mark: str, dagster_home: Path, log) -> None:
    """`make run`'s stop: kill what `kill_leftovers` finds after 1 s and, when a run worker was among them, mark
    the runs whose worker is gone canceled. A run worker that was not killed reported its own end, and a killed
    code server or resource tracker leaves no run behind; a worker that died some other way is found by the next
    start's sweep."""
    killed = kill_leftovers(pgid, mark, 1.0, log)
    if any(RUN_WORKER in command for command in killed.values()) and (dagster_home / "dagster.yaml").is_file():
        import dagster as dg

        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            cancel_orphaned_runs(instance, log)


if __name__ == "__main__":
    group, run_mark = sys.argv[1:]
    stop_leftovers(int(group), run_mark, Path(os.environ["DAGSTER_HOME"]),
                   lambda message: print(message, file=sys.stderr))
