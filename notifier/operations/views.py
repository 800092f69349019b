"""Health endpoints for load balancers and orchestrators (see notifier.operations.health)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from notifier.operations.health import readiness


@never_cache
@require_GET
def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    # ?beat=0: the Kubernetes web readiness probe (deploy/k8s/web.yaml) leaves beat out.
    ok, body = readiness(include_beat=request.GET.get("beat") != "0")
    return JsonResponse(body, status=200 if ok else 503)
