"""Events-out tests run the pipeline in-process, like the service tests."""

from tests.notifier.services.conftest import published  # noqa: F401
