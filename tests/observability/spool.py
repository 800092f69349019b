"""A Sentry transport for tests: every envelope item is appended to a JSON-lines file.

Worker processes started by a test write their events and check-ins into the test's file (the
path comes in NOTIFIER_TEST_SENTRY_SPOOL), so the test reads what would have been sent, without
a network. Writes are appended under an exclusive lock: pool processes share the file.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

TEST_DSN = "https://public@sentry.invalid/1"


class SpoolTransport(Transport):
    def __init__(self, path: str | Path, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.path = Path(path)

    def capture_envelope(self, envelope: Envelope) -> None:
        lines = []
        for item in envelope.items:
            payload = item.payload.json
            if payload is None:
                payload = json.loads(item.payload.get_bytes() or b"null")
            lines.append(json.dumps({"type": item.type, "payload": payload}, default=str))
        with self.path.open("a") as spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            spool.write("".join(line + "\n" for line in lines))


def read_spool(path: str | Path) -> list[dict[str, Any]]:
    file = Path(path)
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
