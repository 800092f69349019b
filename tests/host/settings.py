"""A product that adds Notifier to itself: its own user model (shop.Customer, UUID keys), its own
URLs with Notifier under /notifications/, its own Celery app (tests/host/celery.py).

The lines between the markers are the ones the README's "Add Notifier to your project" shows;
tests/test_host_project.py checks that they are the same.
"""

import os

SECRET_KEY = "host-project-test-key"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "tests.host.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
EMAIL_TIMEOUT = 10
LOGIN_URL = "/accounts/login/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # --- notifier: INSTALLED_APPS ---
    "django_celery_beat",
    "notifier",
    "channels.apps.ChannelAdaptersConfig",
    "campaigns",
    # --- end ---
    # The user model's app after Notifier's: its migrations still run first.
    "tests.host.shop",
]
AUTH_USER_MODEL = "shop.Customer"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_db = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/notifier")
_user_host, _name = _db.removeprefix("postgres://").rsplit("/", 1)
_user, _host_port = _user_host.split("@")
_host, _port = _host_port.split(":")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        # A worker started by the tests is handed the test database's name.
        "NAME": os.environ.get("HOST_DB_NAME", f"{_name}_host"),
        "USER": _user,
        "HOST": _host,
        "PORT": _port,
    }
}

_redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
# --- notifier: settings ---
CELERY_BROKER_URL = _redis
NOTIFIER_REDIS_URL = _redis
NOTIFIER_SITE_URL = "https://shop.example.com"
# --- end ---
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# The host's sandboxes (no real SMS or push provider in a test).
NOTIFIER_PROVIDERS = {
    "inapp": ["inapp"],
    "email": ["sandbox"],
    "sms": ["sandbox"],
    "push": ["sandbox"],
}
