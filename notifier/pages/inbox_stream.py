"""The inbox's live event stream (Server-Sent Events): the unread count now, then on each change.

GET /api/inbox/stream/   text/event-stream for the logged-in user (the inbox API's session)

A stream starts with a `retry:` hint and an `inbox` event {"unread_count": n, "changes":
[{"change": "resync"}]}, the count read after the stream subscribed, so a page that connects
or reconnects is right whatever it missed. Then one `inbox` event per burst of changes, the
count read afresh after them: {"unread_count": n, "changes": [{"change": "read", "item": 7}]}
(notifier.live_inbox.InboxChange), and a comment line every NOTIFIER_LIVE_HEARTBEAT_S.

Built to hold thousands of idle streams in one ASGI process (uvicorn, notifier_site/asgi.py):

- a stream is a coroutine waiting on a queue, not a thread. Django runs a request's sync parts
  (middleware, the session) on a thread of the request's own; the stream hands it back, with
  its database connection, once it has started;
- one Redis pub/sub connection per process (`InboxHub`) subscribes to the channels of the users
  with a stream open here and fans each message out to their streams;
- unread counts are read in grouped queries (`UnreadCounts`: one for a burst of streams) on a
  few threads of their own (NOTIFIER_LIVE_DB_THREADS).

A burst of (re)connects (a deploy restarts the server; every tab comes back within the retry
hint) would otherwise run thousands of requests' sync parts at once, each on a thread with a
database connection of its own, past PostgreSQL's max_connections: `streams_admitted_gradually`
wraps the ASGI application so that only a few streams of a process are being set up at once
(notifier_site/asgi.py; a host's asgi.py wraps its own the same way).

Under WSGI an open stream would hold a worker for as long as the page is open, so there the
view answers 204 (EventSource then stops) and the page polls: hosts route this path to an ASGI
server. It answers 204 too when the live inbox is off or has no Redis (embedded mode).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import redis
import redis.asyncio
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection, connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from notifier.live_inbox import inbox_channel, live_inbox_enabled
from notifier.redis_client import state_async_client_new
from notifier.selectors import inbox_unread_counts
from notifier.user_keys import UserKey

log = logging.getLogger(__name__)

STREAM_PATH_END = "api/inbox/stream/"
# What a stream sends first and after its process lost Redis for a while (events missed).
RESYNC: dict[str, Any] = {"change": "resync"}
# Changes a stream may hold unsent (a client that stopped reading): past this they fold into
# one resync, which tells the page everything anyway.
QUEUE_SIZE = 100
# How long a new stream waits for Redis to confirm its subscription before giving up, and how
# long the browser then waits to try again.
SUBSCRIBE_TIMEOUT_S = 5.0
UNAVAILABLE_RETRY_MS = 10_000
# Streams of one process being set up at once (the request's sync parts, its database queries),
# until their first event is on its way.
SETUPS_AT_ONCE = 8
# Users' unread counts read in one grouped query, at most.
COUNTS_PER_QUERY = 1000
# The hub's idle read returns this often, so its pub/sub connection is pinged (redis-py's
# health check) and a Redis that vanished is noticed within a minute, not hours.
HUB_POLL_S = 10.0
# Between attempts to reach Redis again after the hub lost it.
HUB_RECONNECT_S = 1.0


class InboxHub:
    """One Redis pub/sub connection for every stream of this process: subscribes to a user's
    channel while a stream of theirs is open here, and hands each message to their streams."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._pubsub = client.pubsub()
        self._streams: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        # SUBSCRIBEs sent and not yet confirmed, per channel, oldest first (Redis confirms in
        # order); a stream reads the count only after its channel's confirmation.
        self._unconfirmed: dict[str, list[asyncio.Future[None]]] = {}
        # Per channel with streams here: done once Redis confirmed the subscription.
        self._ready: dict[str, asyncio.Future[None]] = {}
        # One command at a time on the shared connection: redis-py's PubSub is not safe for
        # concurrent commands (two first subscribes would each open a connection).
        self._commands = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._lost = False
        self.counts = UnreadCounts()

    async def subscribe(self, channel: str) -> asyncio.Queue[dict[str, Any]]:
        """A queue that gets every message on `channel` published after this returns."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._streams.setdefault(channel, set()).add(queue)
        ready = self._ready.get(channel)
        try:
            if ready is None:  # the user's first stream in this process
                ready = self._ready[channel] = asyncio.get_running_loop().create_future()
                async with self._commands:
                    await self._pubsub.subscribe(channel)
                    self._unconfirmed.setdefault(channel, []).append(ready)
                self._start_reader()
            await asyncio.wait_for(asyncio.shield(ready), SUBSCRIBE_TIMEOUT_S)
        except BaseException:
            self.unsubscribe(channel, queue)
            raise
        return queue

    def unsubscribe(self, channel: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Forget `queue`; the last stream of a channel to go unsubscribes from it (in the
        background: a stream being cancelled must not wait on Redis)."""
        queues = self._streams.get(channel)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            del self._streams[channel]
            self._ready.pop(channel, None)
            asyncio.get_running_loop().create_task(self._unsubscribe(channel))

    async def _unsubscribe(self, channel: str) -> None:
        try:
            async with self._commands:
                # Checked holding the lock: a stream of that user that came back meanwhile
                # subscribed again either before this (then it stays) or after it.
                if channel in self._streams:
                    return
                await self._pubsub.unsubscribe(channel)
        except (redis.RedisError, OSError):  # the reconnect re-subscribes only what is open
            log.info("could not unsubscribe from %s", channel, exc_info=True)

    def _start_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=HUB_POLL_S)
            except (redis.RedisError, OSError):
                if not self._lost:
                    log.warning("the live inbox lost Redis; reconnecting", exc_info=True)
                self._lost = True
                await asyncio.sleep(HUB_RECONNECT_S)
                continue
            if self._lost:  # reconnected (redis-py re-subscribed): tell everyone to catch up
                self._lost = False
                log.info("the live inbox reached Redis again")
                for queues in self._streams.values():
                    for queue in queues:
                        _offer(queue, RESYNC)
            if message is None:
                continue
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = _text(message["type"])
        channel = _text(message.get("channel") or b"")
        if kind == "subscribe":
            waiting = self._unconfirmed.get(channel)
            if waiting:
                future = waiting.pop(0)
                if not waiting:
                    del self._unconfirmed[channel]
                if not future.done():
                    future.set_result(None)
        elif kind == "message":
            try:
                change = json.loads(message["data"])
            except ValueError:
                log.warning("not JSON on %s: %r", channel, message["data"][:200])
                return
            for queue in self._streams.get(channel, ()):
                _offer(queue, change)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _offer(queue: asyncio.Queue[dict[str, Any]], change: dict[str, Any]) -> None:
    """Queue a change for a stream; a stream too far behind gets one resync instead."""
    try:
        queue.put_nowait(change)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(RESYNC)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, InboxHub] = weakref.WeakKeyDictionary()
_db_threads: ThreadPoolExecutor | None = None


def hub() -> InboxHub | None:
    """This event loop's hub (one per process under uvicorn); None without a state Redis."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        client = state_async_client_new()
        if client is None:
            return None
        found = _hubs[loop] = InboxHub(client)
    return found


def _db_executor() -> ThreadPoolExecutor:
    global _db_threads
    if _db_threads is None:
        _db_threads = ThreadPoolExecutor(
            max_workers=int(settings.NOTIFIER_LIVE_DB_THREADS),
            thread_name_prefix="inbox-stream-db",
        )
    return _db_threads


def _unread_counts_now(user_ids: list[UserKey]) -> dict[UserKey, int]:
    """On one of the stream threads, which keep their connection: drop one the database
    closed (a restart) instead of failing every count after it."""
    if connection.connection is not None and not connection.is_usable():
        connection.close()
    return inbox_unread_counts(user_ids=user_ids)


class UnreadCounts:
    """The unread counts this process's streams ask for, read in grouped queries: a change
    published to two thousand users costs a few queries, not two thousand. A count asked for
    while a query runs waits for the next one, so it is always read after it was asked for
    (after the change that prompted it committed)."""

    def __init__(self) -> None:
        self._asked: dict[UserKey, list[asyncio.Future[int]]] = {}
        self._reading = False

    async def count(self, user_id: UserKey) -> int:
        answer = asyncio.get_running_loop().create_future()
        self._asked.setdefault(user_id, []).append(answer)
        if not self._reading:
            self._reading = True
            asyncio.get_running_loop().create_task(self._read())
        return await answer

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._asked:
                asked, self._asked = self._asked, {}
                users = list(asked)
                for start in range(0, len(users), COUNTS_PER_QUERY):
                    chunk = users[start : start + COUNTS_PER_QUERY]
                    counts: dict[UserKey, int] = {}
                    failure: Exception | None = None
                    try:
                        counts = await loop.run_in_executor(
                            _db_executor(), _unread_counts_now, chunk
                        )
                    except Exception as exc:  # the database is away: those streams end
                        log.warning("could not read unread counts", exc_info=True)
                        failure = exc
                    for user_id in chunk:
                        for answer in asked[user_id]:
                            if answer.done():
                                continue
                            if failure is not None:
                                answer.set_exception(failure)
                            else:
                                answer.set_result(counts[user_id])
        finally:
            self._reading = False


def _hand_back_request_thread() -> None:
    """Let the thread Django's ASGI handler keeps for this request's sync code (asgiref's
    per-request executor) end now, closing its database connection first, instead of idling
    for as long as the stream is open: what lets one process hold thousands of streams. A
    later sync call of this request (Django closing the response) makes a new one. This reads
    asgiref's executor map (SyncToAsync.context_to_thread_executor, asgiref 3.x): should it
    change, nothing is handed back, and test_500_idle_streams_hold_no_thread_each_... fails."""
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None:
        return
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is None:
        return
    executor.submit(connections.close_all)
    executor.shutdown(wait=False)


def _event(unread_count: int, changes: list[dict[str, Any]]) -> bytes:
    data = json.dumps({"unread_count": unread_count, "changes": changes}, separators=(",", ":"))
    return f"event: inbox\ndata: {data}\n\n".encode()


async def _events(user_id: UserKey, channel: str, hub_: InboxHub) -> AsyncIterator[bytes]:
    # Subscribed here, not in the view: a client gone before the body starts leaves no
    # subscription behind (an async generator never started never runs its `finally`).
    try:
        queue = await hub_.subscribe(channel)
    except (redis.RedisError, OSError, TimeoutError):
        log.warning("could not open an inbox stream", exc_info=True)
        # The stream ends; the browser tries again after this, the page polls meanwhile.
        yield f"retry: {UNAVAILABLE_RETRY_MS}\n: live updates are unavailable\n\n".encode()
        return
    heartbeat_s = float(settings.NOTIFIER_LIVE_HEARTBEAT_S)
    try:
        # Counted after the subscription was confirmed: nothing between the two is missed.
        first = _event(await hub_.counts.count(user_id), [RESYNC])
        yield f"retry: {int(settings.NOTIFIER_LIVE_RETRY_MS)}\n".encode() + first
        _hand_back_request_thread()
        while True:
            try:
                changes = [await asyncio.wait_for(queue.get(), heartbeat_s)]
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            while not queue.empty():  # a burst (read-all in another tab, a digest): one event
                changes.append(queue.get_nowait())
            yield _event(await hub_.counts.count(user_id), changes)
    finally:
        hub_.unsubscribe(channel, queue)


@never_cache
@require_GET
async def inbox_stream(request: HttpRequest) -> HttpResponseBase:
    user = await request.auser()
    if not user.is_authenticated:
        return JsonResponse({"error": "log in to read your inbox"}, status=401)
    if not isinstance(request, ASGIRequest) or not live_inbox_enabled():
        return HttpResponse(status=204)  # poll instead (see the module's docstring)
    hub_ = hub()
    if hub_ is None:
        return HttpResponse(status=204)
    user_id = cast(UserKey, user.pk)
    stream = StreamingHttpResponse(
        _events(user_id, inbox_channel(user_id), hub_), content_type="text/event-stream"
    )
    stream["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return stream


AsgiApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def streams_admitted_gradually(application: AsgiApp, *, at_once: int = SETUPS_AT_ONCE) -> AsgiApp:
    """Wraps an ASGI application: requests for the inbox stream (paths ending in
    api/inbox/stream/) wait their turn until fewer than `at_once` of them are between arriving
    and sending their first event; every other request passes straight through."""
    gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
        weakref.WeakKeyDictionary()
    )

    async def admitted(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(STREAM_PATH_END):
            await application(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        gate = gates.get(loop) or gates.setdefault(loop, asyncio.Semaphore(at_once))
        await gate.acquire()
        held = True

        async def send_and_release(message: Any) -> None:
            nonlocal held
            await send(message)
            if held and message["type"] == "http.response.body":
                held = False
                gate.release()

        try:
            await application(scope, receive, send_and_release)
        finally:
            if held:
                gate.release()

    return admitted


# What the stream server answers besides the stream: the health probes of its container.
HEALTH_PATH_ENDS = ("health/live/", "health/ready/")
NOT_HERE = (
    b"Not found: this server answers only the live inbox stream (api/inbox/stream/) and the "
    b"health probes; the rest of the site is on the web service.\n"
)


def stream_paths_only(application: AsgiApp) -> AsgiApp:
    """Wraps an ASGI application: HTTP requests for the inbox stream and the health probes go
    through; any other path is a 404 before Django sees it (the proxy sends only the stream
    here; the rest of the site, and the request bodies the WSGI wrapper vets, stay on the web
    service)."""

    async def only(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.endswith((STREAM_PATH_END, *HEALTH_PATH_ENDS)):
            await application(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(NOT_HERE)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": NOT_HERE})

    return only
