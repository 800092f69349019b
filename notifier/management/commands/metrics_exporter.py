"""Serve this box's worker metrics to Prometheus: for worker boxes that run no web process.

Workers write their counters and histograms into PROMETHEUS_MULTIPROC_DIR; on a box with a
web process, its /metrics/ already adds them up. A box with only workers runs this next to
them (same directory) so Prometheus can scrape it; the same bearer token is required. The
state gauges (queues, held deliveries, breakers) are left to the web's /metrics/, so they
are not counted once per box.
"""

from __future__ import annotations

from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from prometheus_client import make_wsgi_app

from notifier.operations.metrics import multiprocess_dir, scrape_registry, token_allows


def exporter_app(token: str) -> Any:
    metrics = make_wsgi_app(scrape_registry(state=False))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if not token_allows(environ.get("HTTP_AUTHORIZATION", ""), token):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"a bearer token is required"]
        return metrics(environ, start_response)

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        return


class Command(BaseCommand):
    help = "Serve the worker metrics of this box (PROMETHEUS_MULTIPROC_DIR) to Prometheus."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--bind", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=9808)

    def handle(self, *args: Any, **options: Any) -> None:
        if not multiprocess_dir():
            raise CommandError("set PROMETHEUS_MULTIPROC_DIR to the directory the workers share")
        if not settings.NOTIFIER_METRICS_TOKEN:
            raise CommandError("set NOTIFIER_METRICS_TOKEN: metrics are never served without it")
        server = make_server(
            options["bind"],
            options["port"],
            exporter_app(settings.NOTIFIER_METRICS_TOKEN),
            handler_class=_Quiet,
        )
        self.stdout.write(f"worker metrics on http://{options['bind']}:{options['port']}/")
        server.serve_forever()
