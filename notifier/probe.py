"""Worker health for exec probes: `python -m notifier.probe worker [live|ready]`, exit 0 or 1.

A worker has no HTTP port to probe, and `celery inspect ping` goes through the broker (so it
fails for every worker at once when Redis blips, and costs a broker round trip per pod per
probe). Instead the worker writes its own state into a directory (NOTIFIER_WORKER_PROBE_DIR):

- `heartbeat`, touched every NOTIFIER_WORKER_HEARTBEAT_S by a timer on the consumer's event
  loop. The loop is what receives tasks, so a stuck loop (or a frozen process) stops the
  touches even though the process still exists;
- `state.json`, rewritten at each transition: `consuming` once the consumer is connected to the
  broker and consuming its queues, `reconnecting` when the connection is lost (Celery retries
  in a loop that does not run the timer), `stopped` at shutdown.

Liveness: `consuming` with a fresh heartbeat, or `reconnecting` (restarting the pod would not
bring the broker back, so a broker outage must not fail liveness). Readiness: `consuming` with
a fresh heartbeat, i.e. connected to the broker and taking work. The probe sets up no Django
and opens no connection (about 0.2 s of CPU): it runs every few seconds in every worker pod.
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

from notifier.worker_state import (
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


def probe_worker(*, directory: Path, check: str, now: float | None = None) -> ProbeResult:
    """Read the worker's files in `directory` and judge them."""
    now = time.time() if now is None else now
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        state = None
    except (OSError, ValueError) as exc:
        return ProbeResult(False, f"unreadable worker state: {exc}")
    try:
        heartbeat_age: float | None = now - (directory / HEARTBEAT_FILE).stat().st_mtime
    except FileNotFoundError:
        heartbeat_age = None
    alive = state is not None and _pid_alive(state.get("pid"))
    return judge(
        check=check, state=state, heartbeat_age_s=heartbeat_age, process_alive=alive, now=now
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m notifier.probe",
        description="Exit 0 when the worker is healthy, 1 with the reason otherwise.",
    )
    parser.add_argument("role", choices=["worker"])
    parser.add_argument(
        "check",
        nargs="?",
        default="ready",
        choices=["live", "ready"],
        help="live: the worker is not stuck; ready (default): and consuming from the broker",
    )
    parser.add_argument(
        "--dir", default=os.environ.get(PROBE_DIR_ENV, ""), help=f"default: ${PROBE_DIR_ENV}"
    )
    args = parser.parse_args(argv)
    if not args.dir:
        print(f"unhealthy: {PROBE_DIR_ENV} is not set (the worker writes nothing)")
        return 1
    result = probe_worker(directory=Path(args.dir), check=args.check)
    print(f"{'ok' if result.ok else 'unhealthy'}: {result.reason}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
