from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PricingConfig(AppConfig):
    name = "pricing"

    def ready(self) -> None:
        from .builtin import builtin_prices_restore

        post_migrate.connect(builtin_prices_restore, sender=self)
