from django.apps import AppConfig


class OtelConfig(AppConfig):
    name = "otel"
    verbose_name = "OpenTelemetry ingestion"

    def ready(self) -> None:
        from agents.partitions import PARTITIONED
        from agents.retention import TRACE_ROW_KEEPERS

        from .compaction import COMPACTED_PARTITIONS
        from .retention import RECEIVED_SPANS

        if RECEIVED_SPANS not in TRACE_ROW_KEEPERS:
            TRACE_ROW_KEEPERS.append(RECEIVED_SPANS)
        if COMPACTED_PARTITIONS not in PARTITIONED:
            PARTITIONED.append(COMPACTED_PARTITIONS)
