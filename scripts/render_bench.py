"""Time rendering on the hot path: a typical campaign copy and a code-defined template, 10,000
renders each. Run: .venv/bin/python scripts/render_bench.py

No database is needed: the campaign copy is compiled with the same environment and put in the
per-process variant cache that `render_variant` reads, as a real fan-out batch finds it.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifier_site.settings")

import django

django.setup()

from campaigns import rendering as campaign_rendering  # noqa: E402
from campaigns.rendering import render_variant  # noqa: E402
from channels.base import Channel  # noqa: E402
from notifier.rendering import Lazy, environment, render  # noqa: E402

RENDERS = 10_000
ROUNDS = 7

CAMPAIGN_COPY = {
    "subject": "{{ user.first_name }}, the {{ campaign.name }} opens in three days",
    "body": "Hi {{ user.first_name }},\n\nThe {{ campaign.name }} opens "
    "{{ campaign.event_at }} and {{ headline }}. Use {{ coupon_code }} at checkout.\n\n"
    "See you there,\nMaya from the shop\n\nNo more offers like this: {{ unsubscribe_url }}",
    "html": '<div style="font-family: Georgia, serif; max-width: 520px; color: #333"><h2 '
    'style="color: #8a4b2a">The {{ campaign.name }} opens in three days</h2><p>Hi '
    "{{ user.first_name }},</p><p>{{ headline|capitalize }}. Use "
    '<b style="background: #fdf1d6; padding: 2px 6px">{{ coupon_code }}</b> at checkout.'
    '</p><p>See you there,<br>Maya from the shop</p><p style="font-size: 11px; color: '
    '#999"><a href="{{ unsubscribe_url }}">No more offers like this</a></p></div>',
}
USER = {"first_name": "Olivia", "last_name": "Smith", "name": "Olivia Smith", "locale": "en"}


def campaign_context() -> dict[str, object]:
    return {
        "headline": "everything vintage is 30% off",
        "coupon_code": "AUTUMN30",
        "user": dict(USER),
        "site_name": "Shop",
        "site_url": "https://shop.example.com",
        "preferences_url": Lazy(lambda: "https://shop.example.com/p/abc"),
        "unsubscribe_url": Lazy(lambda: "https://shop.example.com/u/abc"),
        "campaign": {"name": "Autumn sale", "event_at": "2025-10-03 09:00"},
    }


def code_context() -> dict[str, object]:
    return {
        "order_number": "A-1042",
        "carrier": "DHL",
        "eta": "Thursday",
        "tracking_url": "https://track.example.com/A-1042",
        "user": dict(USER),
        "site_name": "Shop",
        "site_url": "https://shop.example.com",
        "preferences_url": Lazy(lambda: "https://shop.example.com/p/abc"),
    }


def timed(label: str, once) -> None:  # type: ignore[no-untyped-def]
    once()
    per_render = []
    for _ in range(ROUNDS):
        # CPU time of this process: the machine is shared, and other processes' load would
        # otherwise show up as this code's cost.
        start = time.process_time()
        for _ in range(RENDERS):
            once()
        per_render.append((time.process_time() - start) / RENDERS * 1e6)
    print(
        f"{label}: {RENDERS:,} renders, best {min(per_render):.1f} µs CPU per render "
        f"(median {statistics.median(per_render):.1f}, {ROUNDS} rounds)"
    )


def main() -> None:
    env = environment()
    compiled = {("email", ""): {part: env.from_string(src) for part, src in CAMPAIGN_COPY.items()}}
    campaign_rendering._cache[1] = (time.monotonic() + 1e9, compiled)
    context = campaign_context()
    timed(
        "campaign copy, email (subject, body, html)",
        lambda: render_variant(1, Channel.EMAIL, context, "en"),
    )
    context = code_context()
    timed(
        "code template order.shipped, email (subject, body, html)",
        lambda: render("order.shipped", Channel.EMAIL, context, "en"),
    )


if __name__ == "__main__":
    main()
