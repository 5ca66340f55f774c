from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    default = True
    name = "accounts"

    def ready(self) -> None:
        from . import checks  # noqa: F401 — registers the deployment checks


class AdminConfig(admin_apps.AdminConfig):
    """Django's admin whose default site pauses logins as ``/login/`` does."""

    default = False
    default_site = "accounts.admin_site.AdminSite"
