"""The worker probe's judgement (pure) and its reading of the files a worker leaves."""

from __future__ import annotations

import os

import pytest

from notifier.operations.probe import judge, judge_beat, main, probe_worker
from notifier.operations.probe_state import HEARTBEAT_FILE, WorkerState, write_state

NOW = 1_000_000.0


def state(current: WorkerState, *, since: float = NOW - 30, interval: float = 5.0) -> dict:
    return {
        "state": str(current),
        "since": since,
        "pid": 1,
        "hostname": "bulk@pod",
        "interval": interval,
    }


@pytest.mark.parametrize("check", ["live", "ready"])
def test_consuming_with_a_fresh_heartbeat_is_live_and_ready(check):
    result = judge(
        check=check,
        state=state(WorkerState.CONSUMING),
        heartbeat_age_s=19.0,
        process_alive=True,
        now=NOW,
    )
    assert result.ok
    assert "bulk@pod consuming" in result.reason


@pytest.mark.parametrize("check", ["live", "ready"])
def test_a_heartbeat_older_than_four_intervals_means_stuck(check):
    result = judge(
        check=check,
        state=state(WorkerState.CONSUMING),
        heartbeat_age_s=21.0,
        process_alive=True,
        now=NOW,
    )
    assert not result.ok
    assert "heartbeat 21s old (limit 20s)" in result.reason


def test_reconnecting_to_the_broker_is_alive_but_not_ready():
    reconnecting = state(WorkerState.RECONNECTING, since=NOW - 12)
    live = judge(
        check="live", state=reconnecting, heartbeat_age_s=300.0, process_alive=True, now=NOW
    )
    ready = judge(
        check="ready", state=reconnecting, heartbeat_age_s=300.0, process_alive=True, now=NOW
    )
    assert live.ok
    assert not ready.ok
    assert ready.reason == "bulk@pod lost the broker 12s ago and is reconnecting"


@pytest.mark.parametrize("check", ["live", "ready"])
def test_stopped_missing_or_dead_workers_are_unhealthy(check):
    stopped = judge(
        check=check,
        state=state(WorkerState.STOPPED),
        heartbeat_age_s=1.0,
        process_alive=True,
        now=NOW,
    )
    assert (stopped.ok, stopped.reason) == (False, "bulk@pod shut down 30s ago")
    never = judge(check=check, state=None, heartbeat_age_s=None, process_alive=False, now=NOW)
    assert not never.ok
    assert "not connected once" in never.reason
    dead = judge(
        check=check,
        state=state(WorkerState.CONSUMING),
        heartbeat_age_s=1.0,
        process_alive=False,
        now=NOW,
    )
    assert (dead.ok, dead.reason) == (False, "bulk@pod: process 1 is gone")


def test_the_probe_reads_what_the_worker_wrote(tmp_path):
    write_state(tmp_path, state=WorkerState.CONSUMING, hostname="tx@pod", interval=1.0)
    (tmp_path / HEARTBEAT_FILE).touch()
    assert probe_worker(directory=tmp_path, check="ready").ok  # our own pid: alive
    os.utime(tmp_path / HEARTBEAT_FILE, (NOW, NOW))
    stale = probe_worker(directory=tmp_path, check="live", now=NOW + 10)
    assert (stale.ok, stale.reason.split(":")[0]) == (False, "tx@pod")


def test_the_command_prints_one_line_and_exits_1_without_a_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NOTIFIER_PROBE_DIR", raising=False)
    assert main(["worker"]) == 1
    assert capsys.readouterr().out == (
        "unhealthy: NOTIFIER_PROBE_DIR is not set (the worker writes nothing)\n"
    )
    assert main(["worker", "live", "--dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out.startswith("unhealthy: no worker state yet")


# --- Beat --------------------------------------------------------------------------------------


def test_beat_is_alive_while_its_loop_ticks_within_six_max_intervals():
    beat = {"pid": 1, "since": NOW, "max_interval": 5}
    assert judge_beat(state=beat, heartbeat_age_s=29.0, process_alive=True).ok
    stale = judge_beat(state=beat, heartbeat_age_s=31.0, process_alive=True)
    assert (stale.ok, stale.reason) == (
        False,
        "beat: 31s old heartbeat (limit 30s): its loop is stuck or frozen",
    )


def test_beat_not_started_or_gone_is_unhealthy():
    assert judge_beat(state=None, heartbeat_age_s=None, process_alive=False).reason == (
        "beat has not started (no beat.json)"
    )
    gone = judge_beat(state={"pid": 7, "max_interval": 5}, heartbeat_age_s=1, process_alive=False)
    assert (gone.ok, gone.reason) == (False, "beat: process 7 is gone")
