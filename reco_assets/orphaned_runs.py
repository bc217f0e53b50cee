"""Runs left STARTED after their run worker died: a `dagster dev` stopped while a run was starting, a killed run
process, a reboot. Dagster's default run launcher does not check on run workers, so such a run would stay STARTED
for good and the sensor, which never overlaps runs of one hour, would not run its hour again. Marking it CANCELED
hands the hour back to the sensor (it retries cancelled hours) and is not relaunched by `run_retries`."""

import os
import signal
import time
from pathlib import Path

import dagster as dg

from reco_assets.processes import pid_alive

# What Dagster's processes look like on a command line (the run worker and its resource tracker are
# multiprocessing children of the code server).
DAGSTER_PROCESS = ("dagster", "multiprocessing")


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


def kill_group_leftovers(pgid: int, grace_s: float, log) -> list[int]:
    """SIGKILL the Dagster processes of group `pgid` still alive after `grace_s` seconds; return their pids."""
    own = {os.getpid(), os.getppid()}

    def leftovers() -> dict[int, str]:
        return {pid: command for pid, command in group_members(pgid).items()
                if pid not in own and any(name in command for name in DAGSTER_PROCESS)}

    deadline = time.monotonic() + grace_s
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = leftovers()
    for pid, command in killed.items():
        log(f"[run] {command[:100]} (pid {pid}) did not stop within {grace_s:g} s of Dagster's exit: killing it")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return list(killed)


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the run's worker process, as its "Started process for run" event recorded it."""
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        event = record.event_log_entry.dagster_event
        pid = event and event.engine_event_data and event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def cancel_orphaned_runs(instance: dg.DagsterInstance, log) -> list[str]:
    """Mark CANCELED every STARTED run whose recorded run worker is no longer alive; return their ids."""
    cancelled = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pid = worker_pid(instance, run.run_id)
        if pid is None or pid_alive(pid):
            continue
        instance.report_run_canceled(run, message=f"Run worker (pid {pid}) is gone: Dagster was stopped (Ctrl+C on "
                                                  "`make run`) or the process was killed. Marked canceled so that "
                                                  "the sensor runs its hour again.")
        log(f"[run] run {run.run_id} ({run.job_name}) lost its run worker (pid {pid}): marked canceled")
        cancelled.append(run.run_id)
    return cancelled
