"""The Celery application: ``celery -A signwave worker|beat|flower`` finds it here."""

from celery import Celery

app = Celery("signwave", include=["signwave.tasks"])
app.config_from_object("celeryconfig")
