"""notify() and notify_many(): validation first, idempotency, and publish-after-commit."""

from __future__ import annotations

import datetime
import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from notifier import dispatch
from notifier.api import (
    MAX_CONTEXT_BYTES,
    MAX_CONTEXT_DEPTH,
    MAX_CONTEXT_INT,
    MAX_EXPIRY_AHEAD,
    MIN_CONTEXT_INT,
    notify,
    notify_many,
)
from notifier.errors import (
    ChannelNotAllowed,
    IdempotencyKeyReused,
    InactiveNotificationType,
    InvalidContext,
    InvalidExpiry,
    InvalidIdempotencyKey,
    InvalidRecipient,
    MissingContextVariable,
    NotifyError,
    UnknownNotificationType,
)
from notifier.models import Delivery, DeliveryEvent, InboxItem, Message, NotificationType, User
from notifier.queues import Lane
from tests.factories import UserFactory, order_context
from tests.security.corpus import nested

pytestmark = pytest.mark.django_db


def table_counts() -> tuple[int, int, int, int]:
    return (
        Message.objects.count(),
        Delivery.objects.count(),
        DeliveryEvent.objects.count(),
        InboxItem.objects.count(),
    )


@pytest.fixture
def published(monkeypatch):
    """Every publish_prepare call, instead of sending it to the broker."""
    calls: list[tuple[list[int], Lane]] = []
    monkeypatch.setattr(dispatch, "publish_prepare", lambda ids, lane: calls.append((ids, lane)))
    return calls


def test_notify_writes_one_message_and_publishes_it_after_commit(
    published, django_capture_on_commit_callbacks
):
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        message = notify(user, "order.shipped", order_context())
    assert Message.objects.get(pk=message.pk).context["order_number"] == "A1001"
    assert message.channels == []  # none named: the routing rules decide when it is routed
    assert published == [([message.pk], Lane.TRANSACTIONAL)]


def test_marketing_rides_the_bulk_lane(published, django_capture_on_commit_callbacks):
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        message = notify(
            user,
            "promo.flash_sale",
            {
                "sale_name": "Double 11",
                "starts_at": "tonight",
                "headline": "Up to 50% off",
                "sale_url": "https://example.com/sale",
            },
        )
    assert published == [([message.pk], Lane.BULK)]


def test_notify_accepts_a_user_id_and_a_subset_of_channels(published):
    user = UserFactory()
    message = notify(user.pk, "order.shipped", order_context(), channels=["email", "email"])
    assert message.user_id == user.pk
    assert message.channels == ["email"]


def test_notify_takes_request_user_a_lazy_object_around_the_user(published, rf):
    """What a view hands over: django.contrib.auth's request.user is a SimpleLazyObject."""
    from django.contrib.auth import get_user
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils.functional import SimpleLazyObject

    user = UserFactory()
    request = rf.get("/")
    request.session = SessionStore()
    request.session["_auth_user_id"] = str(user.pk)
    request.session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    request.session["_auth_user_hash"] = user.get_session_auth_hash()
    lazy = SimpleLazyObject(lambda: get_user(request))

    message = notify(lazy, "order.shipped", order_context())

    assert message.user_id == user.pk


def test_an_optional_variable_may_be_left_out(published):
    notify(
        UserFactory(),
        "promo.flash_sale",
        {"sale_name": "S", "starts_at": "now", "headline": "H", "sale_url": "https://x.test"},
    )
    assert Message.objects.count() == 1


def test_same_idempotency_key_returns_the_same_message_and_publishes_once(
    published, django_capture_on_commit_callbacks
):
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        first = notify(user, "order.shipped", order_context(), idempotency_key="ship:A1001")
        second = notify(user, "order.shipped", order_context(), idempotency_key="ship:A1001")
    assert first.pk == second.pk
    assert Message.objects.count() == 1
    assert len(published) == 1


# --- Bad input: a typed error, and nothing written ------------------------------------------


def bad_calls(user: User, inactive: User) -> list[tuple[str, type[NotifyError], dict]]:
    ctx = order_context()
    return [
        (
            "unknown type",
            UnknownNotificationType,
            dict(user=user, type_key="order.lost", context=ctx),
        ),
        ("type not a string", UnknownNotificationType, dict(user=user, type_key=None, context=ctx)),
        ("missing user", InvalidRecipient, dict(user=None, type_key="order.shipped", context=ctx)),
        (
            "unsaved user",
            InvalidRecipient,
            dict(user=User(username="ghost"), type_key="order.shipped", context=ctx),
        ),
        (
            "deleted user id",
            InvalidRecipient,
            dict(user=999_999_999, type_key="order.shipped", context=ctx),
        ),
        (
            "inactive user",
            InvalidRecipient,
            dict(user=inactive, type_key="order.shipped", context=ctx),
        ),
        (
            "context not a dict",
            InvalidContext,
            dict(user=user, type_key="order.shipped", context=[1]),
        ),
        (
            "datetime in context",
            InvalidContext,
            dict(
                user=user,
                type_key="order.shipped",
                context={**ctx, "eta": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)},
            ),
        ),
        (
            "Decimal in context",
            InvalidContext,
            dict(user=user, type_key="order.shipped", context={**ctx, "amount": Decimal("1.5")}),
        ),
        (
            "set nested in context",
            InvalidContext,
            dict(user=user, type_key="order.shipped", context={**ctx, "items": [{"tags": {1}}]}),
        ),
        (
            "NaN in context",
            InvalidContext,
            dict(user=user, type_key="order.shipped", context={**ctx, "score": float("nan")}),
        ),
        (
            "non-string key",
            InvalidContext,
            dict(user=user, type_key="order.shipped", context={**ctx, 1: "one"}),
        ),
        (
            "reserved variable",
            InvalidContext,
            dict(user=user, type_key="order.shipped", context={**ctx, "user": "mallory"}),
        ),
        (
            "huge context",
            InvalidContext,
            dict(user=user, type_key="order.shipped", context={**ctx, "blob": "x" * 70_000}),
        ),
        (
            "missing variable",
            MissingContextVariable,
            dict(user=user, type_key="order.shipped", context={"order_number": "A1"}),
        ),
        (
            "channel not used by type",
            ChannelNotAllowed,
            dict(
                user=user,
                type_key="social.new_follower",
                context={"follower_name": "Bo", "follower_url": "https://x.test"},
                channels=["sms"],
            ),
        ),
        (
            "unknown channel",
            ChannelNotAllowed,
            dict(user=user, type_key="order.shipped", context=ctx, channels=["fax"]),
        ),
        (
            "channels as a string",
            ChannelNotAllowed,
            dict(user=user, type_key="order.shipped", context=ctx, channels="email"),
        ),
        (
            "empty channels",
            ChannelNotAllowed,
            dict(user=user, type_key="order.shipped", context=ctx, channels=[]),
        ),
        (
            "empty key",
            InvalidIdempotencyKey,
            dict(user=user, type_key="order.shipped", context=ctx, idempotency_key=" "),
        ),
        (
            "key too long",
            InvalidIdempotencyKey,
            dict(user=user, type_key="order.shipped", context=ctx, idempotency_key="k" * 300),
        ),
        (
            "key not a string",
            InvalidIdempotencyKey,
            dict(user=user, type_key="order.shipped", context=ctx, idempotency_key=42),
        ),
    ]


def test_every_bad_input_raises_its_typed_error_and_writes_nothing(
    published, django_capture_on_commit_callbacks
):
    user, inactive = UserFactory(), UserFactory(is_active=False)
    before = table_counts()
    for label, error, kwargs in bad_calls(user, inactive):
        args = (kwargs.pop("user"), kwargs.pop("type_key"))
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(error) as caught:
            notify(*args, **kwargs)
        assert str(caught.value), f"{label}: the error must say what to fix"
        assert table_counts() == before, f"{label} wrote something"
    assert published == []


def test_the_missing_variable_error_names_every_missing_variable():
    with pytest.raises(MissingContextVariable) as caught:
        notify(UserFactory(), "order.shipped", {"order_number": "A1"})
    assert caught.value.missing == ["carrier", "eta", "tracking_url"]
    assert "carrier, eta, tracking_url" in str(caught.value)


def test_only_the_chosen_channels_templates_must_be_satisfied(published):
    # The SMS template needs tracking_url; the in-app title and body do not... but its link does.
    with pytest.raises(MissingContextVariable):
        notify(
            UserFactory(),
            "order.shipped",
            {"order_number": "A1", "carrier": "SF", "eta": "x"},
            channels=["inapp"],
        )
    notify(
        UserFactory(),
        "payment.succeeded",
        {"amount": "¥10", "order_number": "A1"},
        channels=["sms"],
    )


def test_a_switched_off_type_is_refused():
    NotificationType.objects.filter(pk="order.shipped").update(is_active=False)
    with pytest.raises(InactiveNotificationType):
        notify(UserFactory(), "order.shipped", order_context())
    assert Message.objects.count() == 0


def test_reusing_a_key_for_another_user_is_an_error_not_a_silent_return(published):
    notify(UserFactory(), "order.shipped", order_context(), idempotency_key="k-1")
    with pytest.raises(IdempotencyKeyReused, match="already belongs to message"):
        notify(UserFactory(), "order.shipped", order_context(), idempotency_key="k-1")
    assert Message.objects.count() == 1


# --- Transactions -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_sends_nothing(published):
    user = UserFactory()

    def place_order() -> None:
        with transaction.atomic():
            notify(user, "order.shipped", order_context())
            raise RuntimeError("the order failed to save")

    with pytest.raises(RuntimeError):
        place_order()
    assert Message.objects.count() == 0
    assert published == []


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_publish_waits_for_commit(published):
    user = UserFactory()
    with transaction.atomic():
        message = notify(user, "order.shipped", order_context())
        assert published == []
    assert published == [([message.pk], Lane.TRANSACTIONAL)]


@pytest.mark.django_db(transaction=True)
def test_racing_calls_with_one_key_make_one_message(published):
    user = UserFactory()
    start = threading.Barrier(8)
    results: list[int] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            start.wait()
            with transaction.atomic():
                results.append(
                    notify(user, "order.shipped", order_context(), idempotency_key="race:1").pk
                )
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(results) == 8
    assert len(set(results)) == 1
    assert Message.objects.filter(idempotency_key="race:1").count() == 1
    assert len(published) == 1


# --- notify_many ------------------------------------------------------------------------------


def test_notify_many_writes_one_message_per_user_with_per_user_context(
    published, django_capture_on_commit_callbacks
):
    users = UserFactory.create_batch(5)
    contexts = {users[0].pk: {"order_number": "SPECIAL"}}
    with django_capture_on_commit_callbacks(execute=True):
        result = notify_many(
            users,
            "order.shipped",
            order_context(),
            contexts=contexts,
            idempotency_key="wave-1",
            channels=["inapp", "email"],
        )
    assert result.created == 5
    messages = {m.user_id: m for m in Message.objects.all()}
    assert messages[users[0].pk].context["order_number"] == "SPECIAL"
    assert messages[users[1].pk].context["order_number"] == "A1001"
    assert messages[users[1].pk].idempotency_key == f"wave-1:{users[1].pk}"
    assert [sorted(ids) for ids, _ in published] == [sorted(result.message_ids)]


def test_notify_many_again_with_the_same_key_creates_nothing(published):
    users = UserFactory.create_batch(3)
    first = notify_many(users, "order.shipped", order_context(), idempotency_key="wave-2")
    again = notify_many(
        [*users, UserFactory()], "order.shipped", order_context(), idempotency_key="wave-2"
    )
    assert (again.created, again.existing) == (1, 3)
    assert again.message_ids[:3] == first.message_ids
    assert Message.objects.count() == 4


def test_notify_many_is_all_or_nothing(published):
    users = UserFactory.create_batch(3)
    with pytest.raises(InvalidRecipient, match="inactive"):
        notify_many([*users, UserFactory(is_active=False)], "order.shipped", order_context())
    shared = order_context()
    del shared["eta"]
    # Only the first user gets an eta: the other two would render with a hole.
    with pytest.raises(MissingContextVariable):
        notify_many(users, "order.shipped", shared, contexts={users[0].pk: {"eta": "Monday"}})
    with pytest.raises(InvalidRecipient, match="more than once"):
        notify_many([users[0], users[0]], "order.shipped", order_context())
    assert Message.objects.count() == 0


# --- The documented bounds, and what validation costs -----------------------------------------


def test_values_at_the_documented_bounds_are_stored(published):
    user = UserFactory()
    context = order_context() | {
        "extremes": [MAX_CONTEXT_INT, MIN_CONTEXT_INT, 1e-300, -0.0, True, None],
        "deep": nested(MAX_CONTEXT_DEPTH - 1),  # the context itself is the first level
        "tuple": (1, "two"),
    }
    expires_at = timezone.now() + MAX_EXPIRY_AHEAD - datetime.timedelta(minutes=1)
    message = notify(user, "order.shipped", context, expires_at=expires_at)
    message.refresh_from_db()
    assert message.context == context | {"tuple": [1, "two"]}
    assert message.expires_at == expires_at


@pytest.mark.parametrize(
    ("extra", "fix"),
    [
        ({"n": MAX_CONTEXT_INT + 1}, "pass it as a string"),
        ({"n": MIN_CONTEXT_INT - 1}, "pass it as a string"),
        ({"deep": nested(MAX_CONTEXT_DEPTH)}, "keep contexts flatter"),
        ({"blob": "x" * MAX_CONTEXT_BYTES}, "pass ids, not documents"),
    ],
    ids=["int_above", "int_below", "too_deep", "too_big"],
)
def test_values_past_the_documented_bounds_are_refused(published, extra, fix):
    with pytest.raises(InvalidContext, match=fix):
        notify(UserFactory(), "order.shipped", order_context() | extra)
    assert Message.objects.count() == 0


def test_an_expiry_past_the_horizon_is_refused_and_one_inside_it_is_kept_in_utc(published):
    user = UserFactory()
    with pytest.raises(InvalidExpiry, match="ten years"):
        notify(
            user,
            "order.shipped",
            order_context(),
            expires_at=timezone.now() + MAX_EXPIRY_AHEAD + datetime.timedelta(minutes=1),
        )
    in_auckland = (timezone.now() + datetime.timedelta(days=1)).astimezone(
        datetime.timezone(datetime.timedelta(hours=13, minutes=45))
    )
    message = notify(user, "order.shipped", order_context(), expires_at=in_auckland)
    assert message.expires_at == in_auckland
    assert message.expires_at.tzinfo is datetime.UTC


def test_notify_many_takes_any_iterable_of_users_and_their_ids(published):
    users = UserFactory.create_batch(3)
    result = notify_many(
        User.objects.filter(pk__in=[u.pk for u in users[:2]]).iterator(),
        "order.shipped",
        order_context(),
        contexts={users[0].pk: {"eta": "Monday"}},
    )
    assert result.created == 2
    result = notify_many((u.pk for u in users[2:]), "order.shipped", order_context())
    assert result.created == 1


def test_notify_with_every_argument_costs_one_query(published, django_assert_num_queries):
    user = UserFactory()
    notify(user, "order.shipped", order_context())  # the type is cached from here on
    with django_assert_num_queries(1):
        notify(
            user,
            "order.shipped",
            order_context(items=[{"sku": "A", "qty": 2}]),  # type: ignore[arg-type]
            idempotency_key="one-query",
            channels=["inapp", "email"],
            expires_at=timezone.now() + datetime.timedelta(days=1),
        )
