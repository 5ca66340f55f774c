"""The Celery app. The beat schedule is defined here and nowhere else."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinnest_analytics.settings")

app = Celery("thinnest_analytics")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Every periodic job of the product, in one place.
app.conf.beat_schedule = {
    "evaluate-alerts": {
        "task": "alerts.evaluate",
        "schedule": float(os.environ.get("ALERTS_EVALUATION_SECONDS", "60")),
    },
    # Calls nobody has heard from for VOICE_STALE_CALL_MINUTES are closed as dropped.
    "voice-close-stale-calls": {"task": "voice.calls_close_stale", "schedule": 60.0},
    # Notifications whose delivery task was lost (broker down, worker killed).
    "sweep-alert-notifications": {
        "task": "alerts.sweep",
        "schedule": float(os.environ.get("ALERT_SWEEP_SECONDS", "60")),
    },
    # Received OpenTelemetry spans of traces settled for OTEL_SPAN_SETTLE_SECONDS, packed.
    "compact-received-spans": {
        "task": "otel.compact_spans",
        "schedule": float(os.environ.get("OTEL_SPAN_COMPACTION_EVERY_SECONDS", "300")),
    },
    # Raw traces older than RETENTION_DAYS; rollups stay. Once a day, just after
    # midnight UTC: the raw tables are in daily partitions on PostgreSQL, so this
    # pass drops yesterday's expired day whole and deletes row by row only the
    # first minutes of the day the horizon falls in. An hourly pass would delete
    # that edge day row by row, hour after hour, through the whole day.
    "apply-retention": {
        "task": "agents.apply_retention",
        "schedule": crontab(minute=17, hour=0),
    },
    # The daily partitions of the next days, created before rows arrive for them.
    "create-partitions-ahead": {
        "task": "agents.create_partitions_ahead",
        "schedule": crontab(minute=7, hour=0),
    },
}
