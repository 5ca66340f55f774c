from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from metrics.rebuild import REBUILD_HOOKS

        from .services import usage_rebuild_day

        if usage_rebuild_day not in REBUILD_HOOKS:
            REBUILD_HOOKS.append(usage_rebuild_day)
