"""Health of workers and beat for exec probes: `python -m notifier.operations.probe worker
[live|ready]` and `python -m notifier.operations.probe beat`; exit 0, or 1 with the reason on
one line.

A worker has no HTTP port to probe, and `celery inspect ping` goes through the broker (so it
fails for every worker at once when Redis blips, and costs a broker round trip per pod per
probe). Instead the worker writes its own state into a directory (NOTIFIER_PROBE_DIR):

- `heartbeat`, touched every NOTIFIER_WORKER_HEARTBEAT_S by a timer on the consumer's event
  loop. The loop is what receives tasks, so a stuck loop (or a frozen process) stops the
  touches even though the process still exists. (That holds for the prefork pool deploy/
  runs; with the solo or threads pools Celery's timer runs in a thread of its own.);
- `state.json`, rewritten at each transition: `consuming` once the consumer is connected to the
  broker and consuming its queues, `reconnecting` when the connection is lost (Celery retries
  in a loop that does not run the timer), `stopped` at shutdown.

Liveness: `consuming` with a fresh heartbeat, or `reconnecting` (restarting the pod would not
bring the broker back, so a broker outage must not fail liveness). Readiness: `consuming` with
a fresh heartbeat, i.e. connected to the broker and taking work.

Beat: its scheduler (notifier.operations.beat_scheduler) touches `beat-heartbeat` on every tick
of its loop; alive while that is fresh. The probe sets up no Django and opens no connection (about
0.2 s of CPU): it runs every few seconds in every pod.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier.operations.probe_state import (
    BEAT_HEARTBEAT_FILE,
    BEAT_STALE_AFTER_TICKS,
    BEAT_STATE_FILE,
    HEARTBEAT_FILE,
    PROBE_DIR_ENV,
    STALE_AFTER_INTERVALS,
    STATE_FILE,
    WorkerState,
)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str


# --- The probe's side: pure decisions, then the files ------------------------------------------


def judge(
    *,
    check: str,
    state: dict[str, Any] | None,
    heartbeat_age_s: float | None,
    process_alive: bool,
    now: float,
) -> ProbeResult:
    """Pure: is the worker alive (`live`) or taking work (`ready`), and why not."""
    if state is None:
        return ProbeResult(False, "no worker state yet: the worker has not connected once")
    name = state.get("hostname", "worker")
    if not process_alive:
        return ProbeResult(False, f"{name}: process {state.get('pid')} is gone")
    current = state.get("state")
    since = now - float(state.get("since", now))
    if current == WorkerState.STOPPED:
        return ProbeResult(False, f"{name} shut down {since:.0f}s ago")
    if current == WorkerState.RECONNECTING:
        reason = f"{name} lost the broker {since:.0f}s ago and is reconnecting"
        return ProbeResult(check == "live", reason)
    limit = STALE_AFTER_INTERVALS * float(state.get("interval", 5))
    if heartbeat_age_s is None:
        return ProbeResult(False, f"{name}: no heartbeat file")
    if heartbeat_age_s > limit:
        return ProbeResult(
            False,
            f"{name}: heartbeat {heartbeat_age_s:.0f}s old (limit {limit:.0f}s): "
            "the consumer's event loop is stuck or the process is frozen",
        )
    return ProbeResult(
        True, f"{name} consuming, connected to the broker, heartbeat {heartbeat_age_s:.1f}s old"
    )


def judge_beat(
    *, state: dict[str, Any] | None, heartbeat_age_s: float | None, process_alive: bool
) -> ProbeResult:
    """Pure: is beat's loop still ticking?"""
    if state is None:
        return ProbeResult(False, "beat has not started (no beat.json)")
    if not process_alive:
        return ProbeResult(False, f"beat: process {state.get('pid')} is gone")
    limit = BEAT_STALE_AFTER_TICKS * float(state.get("max_interval", 5))
    if heartbeat_age_s is None or heartbeat_age_s > limit:
        age = "no" if heartbeat_age_s is None else f"{heartbeat_age_s:.0f}s old"
        return ProbeResult(
            False, f"beat: {age} heartbeat (limit {limit:.0f}s): its loop is stuck or frozen"
        )
    return ProbeResult(True, f"beat ticking, heartbeat {heartbeat_age_s:.1f}s old")


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(
    directory: Path, state_file: str, heartbeat_file: str, now: float
) -> tuple[dict[str, Any] | None, float | None]:
    try:
        state = json.loads((directory / state_file).read_text())
    except FileNotFoundError:
        state = None
    try:
        heartbeat_age: float | None = now - (directory / heartbeat_file).stat().st_mtime
    except FileNotFoundError:
        heartbeat_age = None
    return state, heartbeat_age


def probe_worker(*, directory: Path, check: str, now: float | None = None) -> ProbeResult:
    """Read the worker's files in `directory` and judge them."""
    now = time.time() if now is None else now
    try:
        state, heartbeat_age = _read(directory, STATE_FILE, HEARTBEAT_FILE, now)
    except (OSError, ValueError) as exc:
        return ProbeResult(False, f"unreadable worker state: {exc}")
    alive = state is not None and _pid_alive(state.get("pid"))
    return judge(
        check=check, state=state, heartbeat_age_s=heartbeat_age, process_alive=alive, now=now
    )


def probe_beat(*, directory: Path, now: float | None = None) -> ProbeResult:
    """Read beat's files in `directory` and judge them."""
    try:
        state, heartbeat_age = _read(
            directory, BEAT_STATE_FILE, BEAT_HEARTBEAT_FILE, time.time() if now is None else now
        )
    except (OSError, ValueError) as exc:
        return ProbeResult(False, f"unreadable beat state: {exc}")
    alive = state is not None and _pid_alive(state.get("pid"))
    return judge_beat(state=state, heartbeat_age_s=heartbeat_age, process_alive=alive)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m notifier.operations.probe",
        description="Exit 0 when the worker is healthy, 1 with the reason otherwise.",
    )
    parser.add_argument("role", choices=["worker", "beat"])
    parser.add_argument(
        "check",
        nargs="?",
        default="ready",
        choices=["live", "ready"],
        help="worker: live = not stuck; ready (default) = and consuming from the broker. "
        "beat: both mean its loop ticks",
    )
    parser.add_argument(
        "--dir", default=os.environ.get(PROBE_DIR_ENV, ""), help=f"default: ${PROBE_DIR_ENV}"
    )
    args = parser.parse_args(argv)
    # The verdict goes to stdout: it is what the kubelet shows in the pod's events when an exec
    # probe fails (and what an operator reads when running the probe by hand).
    if not args.dir:
        print(f"unhealthy: {PROBE_DIR_ENV} is not set (the {args.role} writes nothing)")  # noqa: T201
        return 1
    directory = Path(args.dir)
    if args.role == "beat":
        result = probe_beat(directory=directory)
    else:
        result = probe_worker(directory=directory, check=args.check)
    print(f"{'ok' if result.ok else 'unhealthy'}: {result.reason}")  # noqa: T201
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
