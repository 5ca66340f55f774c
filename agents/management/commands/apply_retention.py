from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from agents.retention import BATCH_SIZE, retention_apply, retention_horizon, retention_pending


class Command(BaseCommand):
    help = (
        "Delete raw traces older than RETENTION_DAYS (with their steps, scores, OpenTelemetry "
        "spans and emptied conversations); on PostgreSQL whole days are dropped, the rest is deleted "
        "in batches; rollups are kept. Beat runs it daily at 00:17 UTC."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            help=f"keep this many days (default RETENTION_DAYS, {settings.RETENTION_DAYS})",
        )
        parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="traces per transaction")

    def handle(self, *args, days, dry_run, batch_size, **options):
        if days is not None and days < 1:
            raise CommandError("--days must be 1 or more")
        if batch_size < 1:
            raise CommandError("--batch-size must be 1 or more")
        now = timezone.now()
        horizon = retention_horizon(days=days, now=now)
        if horizon is None:
            self.stdout.write("Retention is off (RETENTION_DAYS=0): raw traces are kept forever.")
            return
        pending = retention_pending(horizon=horizon)
        before = f"created before {horizon:%Y-%m-%d %H:%M} UTC"
        if dry_run:
            self.stdout.write(
                f"Would delete {pending.traces:,} traces ({pending.steps:,} steps, {pending.scores:,} scores, "
                f"{pending.spans:,} OpenTelemetry spans) {before}, and the conversations left empty."
            )
            return
        with tqdm(
            total=pending.traces, desc="deleting traces", unit="trace", disable=options["verbosity"] == 0
        ) as bar:
            done = retention_apply(days=days, now=now, batch_size=batch_size, progress=bar.update)
        self.stdout.write(
            f"Deleted {done.traces:,} traces ({done.steps:,} steps, {done.scores:,} scores, "
            f"{done.spans:,} OpenTelemetry spans) {before}, and {done.conversations:,} conversations "
            "left empty. Rollups are kept."
        )
        self.stdout.write(
            f"Dropped {done.days_dropped:,} whole days ({done.traces_dropped:,} traces); "
            f"deleted {done.traces - done.traces_dropped:,} traces one by one."
        )
