"""Running Notifier: health endpoints and probes, metrics, Sentry and structured logs, failure
alerts, and the start-up system checks. The delivery core reports to these; none of them
sends anything."""
