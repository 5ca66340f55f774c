"""The Django admin's site, with the product's login pause.

``accounts.apps.AdminConfig`` replaces ``django.contrib.admin`` in
``INSTALLED_APPS`` (the way Django documents for overriding the default site),
so ``admin.site`` everywhere is this site."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from .forms import AdminLoginForm


def paused_login_status(response: HttpResponse) -> HttpResponse:
    """A login page refused because of a pause answers 429, not 200."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    if getattr(form, "paused", False):
        response.status_code = 429
    return response


class AdminSite(admin.AdminSite):
    login_form = AdminLoginForm

    def login(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        return paused_login_status(super().login(request, extra_context))
