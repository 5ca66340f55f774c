from django.apps import AppConfig


class OtelConfig(AppConfig):
    name = "otel"
    verbose_name = "OpenTelemetry ingestion"

    def ready(self) -> None:
        from agents.retention import TRACE_ROW_KEEPERS

        from .retention import RECEIVED_SPANS

        if RECEIVED_SPANS not in TRACE_ROW_KEEPERS:
            TRACE_ROW_KEEPERS.append(RECEIVED_SPANS)
