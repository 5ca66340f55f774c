from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max, Min
from tqdm import tqdm

from accounts.models import Organisation
from metrics.rebuild import rollups_rebuild
from metrics.rollups import raw_model
from metrics.windows import WindowError, parse_instant, retention_horizon


class Command(BaseCommand):
    help = "Rebuild hourly and daily rollups from raw traces (whole UTC days covering --from/--to)."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="start", help="ISO 8601; default: the oldest trace")
        parser.add_argument("--to", dest="end", help="ISO 8601, exclusive; default: now")
        parser.add_argument("--org", help="only this organisation (slug)")

    def handle(self, *args, start, end, org, **options):
        organisation_id = None
        if org:
            organisation = Organisation.objects.filter(slug=org).first()
            if organisation is None:
                raise CommandError(f"no organisation '{org}'")
            organisation_id = organisation.pk
        try:
            start_at = parse_instant(start, "from") if start else None
            end_at = parse_instant(end, "to") if end else datetime.now(UTC)
        except WindowError as exc:
            raise CommandError(str(exc)) from None
        if start_at is None:
            Trace, Session = raw_model("agents.Trace"), raw_model("agents.Session")
            scope = {} if organisation_id is None else {"organisation_id": organisation_id}
            oldest = [
                Trace.objects.filter(**scope).aggregate(m=Min("created_at"))["m"],
                Session.objects.filter(**scope).aggregate(m=Min("started_at"))["m"],
            ]
            oldest = [o for o in oldest if o is not None]
            if not oldest:
                self.stdout.write("No traces: nothing to rebuild.")
                return
            start_at = min(oldest)
            newest = Trace.objects.filter(**scope).aggregate(m=Max("created_at"))["m"]
            if newest is not None and newest >= end_at:
                end_at = newest
        if start_at >= end_at:
            raise CommandError("'--from' must be before '--to'")
        days = rollups_rebuild(
            start=start_at,
            end=end_at,
            organisation_id=organisation_id,
            progress=lambda items: tqdm(
                items, desc="rebuilding rollups", unit="day", disable=options["verbosity"] == 0
            ),
        )
        self.stdout.write(
            f"Rebuilt rollups for {days} day(s) from {start_at:%Y-%m-%d} to {end_at:%Y-%m-%d %H:%M}."
        )
        horizon = retention_horizon()
        if horizon is not None and start_at < horizon:
            self.stdout.write(
                f"Days before {horizon:%Y-%m-%d %H:%M} UTC are past RETENTION_DAYS: their raw traces "
                "may be deleted, so their rollups were kept as they are."
            )
