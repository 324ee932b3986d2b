"""A Django site configured the way Django's deployment docs say to run behind a TLS-terminating
reverse proxy (here `balancer`), for the integration tests in tests/tests/l7_django.rs.

Everything that differs per test comes from the environment, set by the harness
(tests/src/django.rs):
  PUBLIC_HOST      the public name, e.g. www.example.test (the only allowed host)
  PUBLIC_ORIGIN    the public origin, e.g. https://www.example.test:8443 (trusted for CSRF)
  DJANGO_DB        path of the SQLite database every backend of one site shares
  DJANGO_SECRET    SECRET_KEY, the same for every backend (sessions and CSRF tokens are signed)
  BACKEND_NAME     this backend's name, sent back as `X-Backend` (webapp.middleware)
  TRUSTED_PROXIES  read by webapp.wsgi, not here
"""

import os

PUBLIC_HOST = os.environ["PUBLIC_HOST"]
PUBLIC_ORIGIN = os.environ["PUBLIC_ORIGIN"]
BACKEND_NAME = os.environ.get("BACKEND_NAME", "")

SECRET_KEY = os.environ["DJANGO_SECRET"]
DEBUG = False

# Only the public name: a request whose (forwarded) host is anything else is refused by Django
# with 400, so a proxy that forwards the wrong host is caught.
ALLOWED_HOSTS = [PUBLIC_HOST]

# The proxy terminates TLS and says so in X-Forwarded-Proto; it removes that header from
# clients it does not trust, which is what makes trusting it here safe.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The public host and port come from X-Forwarded-Host / X-Forwarded-Port (same condition).
USE_X_FORWARDED_HOST = True
USE_X_FORWARDED_PORT = True
# Django compares Origin/Referer of unsafe requests with these (and with the request's host).
CSRF_TRUSTED_ORIGINS = [PUBLIC_ORIGIN]
# Anything that arrives as plain http is redirected to https, except the health check, which
# the balancer sends to the server directly.
SECURE_SSL_REDIRECT = True
# The health check, and the views of the slow-client tests (tests/tests/l7_protect.rs), which
# run over plain HTTP: without the exemption they would get a redirect, not the view.
SECURE_REDIRECT_EXEMPT = [r"^healthz/$", r"^(upload|big|busy)/$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
]

MIDDLEWARE = [
    "webapp.middleware.backend_name",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

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
            ],
        },
    },
]

# One database for every backend of a site, so a session made on one is valid on the others.
# IMMEDIATE transactions and a long timeout: backends write sessions concurrently.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["DJANGO_DB"],
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
# Relative: Django puts the script prefix (X-Forwarded-Prefix, see webapp.wsgi) in front.
# Nothing serves it; the admin's CSS may 404.
STATIC_URL = "static/"

# Errors and refused requests (DisallowedHost, CSRF failures) on stderr, which the harness keeps
# in a file and shows when a test fails.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "WARNING"},
        "django.security": {"handlers": ["stderr"], "level": "INFO"},
    },
}
