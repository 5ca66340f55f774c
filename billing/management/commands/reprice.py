from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from accounts.models import Organisation
from agents.models import Agent
from audit.services import Actor
from billing.reprice import organisations_with_traces, traces_reprice
from metrics.windows import WindowError, parse_instant


class Command(BaseCommand):
    help = (
        "Recompute the cost of traces created in [--from, --to) from the current model price table "
        "(costs the caller reported stay), then rebuild the rollups of the days that changed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="start", required=True, help="ISO 8601 (naive means UTC)")
        parser.add_argument("--to", dest="end", help="ISO 8601, exclusive; default: now")
        parser.add_argument("--agent", help="only this agent's traces (its id, e.g. agent_abc123)")
        parser.add_argument("--org", help="only this organisation (slug)")

    def handle(self, *args, start, end, agent, org, **options):
        try:
            start_at = parse_instant(start, "from")
            end_at = parse_instant(end, "to") if end else datetime.now(UTC)
        except WindowError as exc:
            raise CommandError(str(exc)) from None
        if start_at >= end_at:
            raise CommandError("'--from' must be before '--to'")
        organisation = None
        if org:
            organisation = Organisation.objects.filter(slug=org).first()
            if organisation is None:
                raise CommandError(f"no organisation '{org}'")
        chosen_agent = None
        if agent:
            agents = Agent.objects.filter(public_id=agent).select_related("organisation")
            if organisation is not None:
                agents = agents.filter(organisation=organisation)
            found = list(agents[:2])
            if not found:
                raise CommandError(f"no agent '{agent}'")
            if len(found) > 1:
                raise CommandError(f"several organisations have an agent '{agent}': give --org")
            chosen_agent, organisation = found[0], found[0].organisation
        organisations = (
            [organisation] if organisation else organisations_with_traces(start=start_at, end=end_at)
        )
        result = traces_reprice(
            start=start_at,
            end=end_at,
            organisations=organisations,
            agent=chosen_agent,
            actor=Actor.system("manage.py"),
            progress=lambda items: tqdm(
                items, desc="repricing traces", unit="day", disable=options["verbosity"] == 0
            ),
        )
        self.stdout.write(
            f"Repriced {result.traces_changed} trace(s) on {result.days_rebuilt} day(s): "
            f"{result.cost_before_usd:f} USD before, {result.cost_after_usd:f} USD after."
        )
