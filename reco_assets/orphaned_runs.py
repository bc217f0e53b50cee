"""Runs left STARTED after their run worker died: a `dagster dev` stopped while a run was starting, a killed run
process, a reboot. Dagster's default run launcher does not check on run workers, so such a run would stay STARTED
for good and the sensor, which never overlaps runs of one hour, would not run its hour again. Marking it CANCELED
hands the hour back to the sensor (it retries cancelled hours) and is not relaunched by `run_retries`."""

import dagster as dg

from reco_assets.services import pid_alive
from reco_assets.services.leftovers import started_at


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the run's worker process and when it said so, from its "Started process for run" event."""
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
