"""A wall-clock time box for CPU-bound work in a web request: code still running when it closes
is interrupted where it stands, by TimeBoxExpired raised in its own thread.

Celery tasks have soft and hard time limits; a web request has nothing between it and the
server's worker timeout (gunicorn's 30 s), and with sync workers a request burning CPU holds a
whole worker process, /health/live/ included. Previews of marketers' copy render in the request,
so each render runs in a time box. A watchdog timer raises the exception into the rendering
thread with `PyThreadState_SetAsyncExc`, which Python checks between bytecodes: this works in
any thread (sync, gthread and the dev server alike), and cannot cut short a single long call in
C (one huge string operation); bounding those is the template sandbox's job.
"""

from __future__ import annotations

import contextvars
import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class TimeBoxExpired(BaseException):
    """The time box closed while its code was still running.

    A BaseException, like KeyboardInterrupt: the code interrupted may catch Exception (a
    template engine reports whatever a render raised as its own error), and must not swallow
    this."""


def _raise_in(thread_id: int, exception: type[BaseException] | None) -> None:
    """Make `thread_id` raise `exception` at its next bytecode (None takes one back)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception) if exception else None
    )


@contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Run the block for at most `seconds` of wall-clock time, else raise TimeBoxExpired in it.

    Keep database work out of the block: the exception lands wherever the code is."""
    if seconds <= 0:
        raise TimeBoxExpired
    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"open": True, "fired": False}

    def expire() -> None:
        with lock:
            if state["open"]:
                state["fired"] = True
                _raise_in(thread_id, TimeBoxExpired)

    watchdog = threading.Timer(seconds, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        with lock:
            state["open"] = False
            fired = state["fired"]
        watchdog.cancel()
        if fired:
            # It fired as the block was finishing and may still be pending: take it back, so
            # it cannot surface later in code that is not ours.
            _raise_in(thread_id, None)


def time_boxed(seconds: float, call: Callable[[], T]) -> T:
    """`call()` in a time box and in a copy of the current context.

    The exception lands between any two bytecodes, also between a context variable's `set` and
    its `reset` (a render's budget: notifier.sandbox): whatever the interrupted code set goes
    with the copy, and the thread, which serves other requests next, keeps nothing of it."""
    context = contextvars.copy_context()
    with time_box(seconds):
        return context.run(call)
