"""The host's own view: shipping an order notifies its customer through Notifier."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from notifier.api import notify


@require_POST
@login_required
def ship_order(request: HttpRequest, number: str) -> JsonResponse:
    message = notify(
        request.user,
        "order.shipped",
        {
            "order_number": number,
            "carrier": "SF Express",
            "eta": "Tuesday",
            "tracking_url": f"https://shop.example.com/track/{number}",
        },
        idempotency_key=f"ship:{number}",
    )
    return JsonResponse({"message": message.pk})
