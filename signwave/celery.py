"""The Celery application: ``celery -A signwave worker|beat|flower`` finds it here."""

import os

from celery import Celery

from signwave.dashboard import flower_environment
from signwave.errors import ConfigError
from signwave.runtime import settings

try:
    _settings = settings()
except ConfigError as exc:
    # A bad SIGNWAVE_* variable under `celery -A signwave ...`: one line, no traceback.
    raise SystemExit(f"signwave: error: {exc.message}") from None

app = Celery("signwave", include=["signwave.tasks"])
app.config_from_object("celeryconfig")
# Read by Flower after it has imported this app, whatever its working directory.
os.environ.update(flower_environment(_settings))
