from django.core.management.base import BaseCommand

from alerts.services import alerts_evaluate


class Command(BaseCommand):
    help = "Evaluate every alert rule once (the same pass Celery beat runs every minute)."

    def handle(self, *args, **options):
        events = alerts_evaluate()
        for event in events:
            self.stdout.write(
                f"{event.rule_name}: {event.state} (value {event.value}, threshold {event.threshold})"
            )
        self.stdout.write(f"{len(events)} transition(s).")
