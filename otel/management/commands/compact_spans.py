from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from otel.compaction import BATCH_SIZE, Compacted, spans_compact


class Command(BaseCommand):
    help = (
        "Compact the received OpenTelemetry spans of traces that received nothing for "
        "--older-than seconds (default OTEL_SPAN_SETTLE_SECONDS): each trace's spans are packed "
        "into one compressed value, without the texts its trace and steps already hold. "
        "One transaction per batch. Beat runs it every five minutes."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=int,
            default=None,
            help=f"seconds since a trace last received a span (default {settings.OTEL_SPAN_SETTLE_SECONDS}; "
            "0 compacts every trace now)",
        )
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="traces per transaction")

    def handle(self, *args, older_than, batch_size, **options):
        older_than = settings.OTEL_SPAN_SETTLE_SECONDS if older_than is None else older_than
        if older_than < 0:
            raise CommandError("--older-than must be 0 or more")
        if batch_size < 1:
            raise CommandError("--batch-size must be 1 or more")

        def progress(batch: Compacted) -> None:
            if options["verbosity"] > 1:
                self.stdout.write(f"  batch: {batch.traces:,} traces, {batch.spans:,} spans")

        done = spans_compact(
            older_than=timedelta(seconds=older_than), batch_size=batch_size, progress=progress
        )
        self.stdout.write(
            f"Compacted {done.traces:,} traces ({done.spans:,} spans) in {done.batches:,} batches: "
            f"{done.span_bytes:,} bytes of span attributes, resources and events became "
            f"{done.packed_bytes:,} bytes."
        )
