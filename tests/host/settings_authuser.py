"""The host project on Django's own user model (django.contrib.auth's User, integer keys): what
a product that never swapped its user model has. Run by tests/test_host_authuser.py."""

from tests.host.settings import *  # noqa: F403
from tests.host.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "tests.host.shop"]
AUTH_USER_MODEL = "auth.User"
DATABASES["default"]["NAME"] = DATABASES["default"]["NAME"].replace("_host", "_authuser")
