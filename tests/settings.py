"""Test settings: the real local PostgreSQL and Redis unless the environment says otherwise."""

import os

os.environ.setdefault("DJANGO_ENV", "test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orchestra")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("LOG_FORMAT", "json")
os.environ.setdefault("LOCAL_MODEL_TOKEN_DELAY_MS", "0")

from orchestra_site.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
