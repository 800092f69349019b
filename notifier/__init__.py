"""Notifier's delivery core: notify(), the pipeline, its models and policies.

Importing it starts nothing: a host project installs the app and points its own Celery app at
`notifier.celery_config.notifier_celery`."""
