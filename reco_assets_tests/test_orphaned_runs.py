"""Runs whose worker is gone, and Dagster processes left in a process group: real processes, a real instance."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import EngineEventData

from reco_assets.orphaned_runs import cancel_orphaned_runs, worker_alive, worker_pid
from reco_assets.services import pid_alive
from reco_assets.services.leftovers import KILLED_A_RUN_WORKER, group_members, kill_leftovers

ROOT = Path(__file__).resolve().parents[1]


@dg.op
def noop() -> None:
    pass


@dg.job
def one_step():
    noop()


def started_run(instance: dg.DagsterInstance, worker: int,
                status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED) -> dg.DagsterRun:
    """A run (STARTED, or STARTING) whose worker process `worker` recorded its start, as Dagster's run workers do."""
    run = instance.create_run_for_job(one_step, status=status)
    instance.report_engine_event(f"Started process for run (pid: {worker}).", run,
                                 EngineEventData.in_process(worker))
    return run


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def test_a_run_in_flight_whose_worker_is_gone_is_canceled_and_a_live_one_is_not(instance):
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        orphan, running = started_run(instance, gone.pid), started_run(instance, alive.pid)
        # A worker killed after it recorded its pid but before its run was STARTED.
        starting = started_run(instance, gone.pid, dg.DagsterRunStatus.STARTING)
        assert worker_pid(instance, orphan.run_id)[0] == gone.pid
        # A live process that started after the run reported its worker is another one (a pid reused after a
        # reboot): the worker is gone.
        assert worker_alive(alive.pid, time.time()) and not worker_alive(alive.pid, time.time() - 3600)
        logged = []
        assert sorted(cancel_orphaned_runs(instance, logged.append)) == sorted([orphan.run_id, starting.run_id])
        assert instance.get_run_by_id(orphan.run_id).status == dg.DagsterRunStatus.CANCELED
        assert instance.get_run_by_id(starting.run_id).status == dg.DagsterRunStatus.CANCELED
        assert instance.get_run_by_id(running.run_id).status == dg.DagsterRunStatus.STARTED
        assert f"lost its run worker (pid {gone.pid}): marked canceled" in logged[0]
        assert cancel_orphaned_runs(instance, logged.append) == []  # once
    finally:
        alive.kill()
        alive.wait()


def test_only_the_marked_dagster_processes_left_in_the_group_are_killed():
    # A group like make run's after `dagster dev` exited: a code server that waits (marked, with a Dagster command
    # line), a marked process that is not Dagster's (a `tee`), and a Dagster process of someone else (unmarked).
    script = ("RECO_RUN_MARK=other exec -a 'dagster api grpc' sleep 60 & "
              "RECO_RUN_MARK=make-run-1 sleep 60 & "
              "RECO_RUN_MARK=make-run-1 exec -a 'dagster code-server start' sleep 60")
    group = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(group_members(group.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = group_members(group.pid)
        spared = [pid for pid in members if pid != group.pid]
        assert len(spared) == 2, members
        logged, started = [], time.monotonic()
        assert list(kill_leftovers(group.pid, "RECO_RUN_MARK=make-run-1", 0.5, logged.append)) == [group.pid]
        assert time.monotonic() - started >= 0.5  # the grace first
        group.wait(timeout=5)
        assert all(pid_alive(pid) for pid in spared) and not pid_alive(group.pid)
        assert "dagster code-server start 60 (pid" in logged[0] and "killing it" in logged[0]
    finally:
        subprocess.run(["pkill", "-KILL", "-g", str(group.pid)], check=False)


@pytest.mark.parametrize("leftover, orphans_end_as", [
    # A run worker killed: its run, and any other whose worker is gone, are marked canceled.
    ("python -c from multiprocessing.spawn import spawn_main --multiprocessing-fork", dg.DagsterRunStatus.CANCELED),
    # A code server, or the run worker's resource tracker, killed alone: no run lost its worker there, so Dagster is
    # not even imported; the next start's sweep handles older orphans.
    ("dagster code-server start", dg.DagsterRunStatus.STARTED),
    ("python -c from multiprocessing.resource_tracker import main;main(5)", dg.DagsterRunStatus.STARTED),
])
def test_make_runs_stop_kills_what_dagster_left_and_cancels_the_runs_of_killed_workers(tmp_path, leftover,
                                                                                         orphans_end_as):
    """scripts/run.sh's stop once `dagster dev` exited: `python -m reco_assets.services.leftovers PGID MARK`, then
    `reco-assets cancel-orphaned-runs` when it says (status 3) that it killed a run worker."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    mark = "RECO_RUN_MARK=make-run-2"
    group = subprocess.Popen(["bash", "-c", f"{mark} exec -a '{leftover}' sleep 60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while leftover not in group_members(group.pid).get(group.pid, "") and time.monotonic() < deadline:
            time.sleep(0.05)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run = started_run(instance, group.pid)
            gone = subprocess.Popen(["true"])
            gone.wait()
            other_orphan = started_run(instance, gone.pid)
        env = os.environ | {"DAGSTER_HOME": str(home)}
        stop = subprocess.run([sys.executable, "-m", "reco_assets.services.leftovers", str(group.pid), mark],
                              env=env, capture_output=True, text=True, timeout=60)
        killed_a_worker = orphans_end_as == dg.DagsterRunStatus.CANCELED
        assert stop.returncode == (KILLED_A_RUN_WORKER if killed_a_worker else 0), stop.stderr
        group.wait(timeout=5)
        assert group.returncode == -9
        assert f"(pid {group.pid}) was still running after Dagster's exit: killing it" in stop.stderr
        if stop.returncode == KILLED_A_RUN_WORKER:
            cancel = subprocess.run([str(ROOT / ".venv" / "bin" / "reco-assets"), "cancel-orphaned-runs"], env=env,
                                    capture_output=True, text=True, timeout=120)
            assert cancel.returncode == 0, cancel.stderr
            assert "2 run(s) whose run worker is gone marked canceled" in cancel.stdout
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert instance.get_run_by_id(run.run_id).status == orphans_end_as
            assert instance.get_run_by_id(other_orphan.run_id).status == orphans_end_as
    finally:
        subprocess.run(["pkill", "-KILL", "-g", str(group.pid)], check=False)
