from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from audit.services import client_ip

from . import ratelimit
from .models import Role


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class PausedLoginMixin:
    """One pause for every login form: after ``LOGIN_MAX_FAILURES`` failures for
    a username from an address (or ten times that from the address), the form
    refuses even the right password for ``LOGIN_LOCKOUT_SECONDS``.

    The pause is kept under the username exactly as the form authenticates it
    (``cleaned_data``, which Django's ``UsernameField`` has already NFKC-normalised
    and stripped), case-folded, so spelling variants of one name share it."""

    paused = False

    def clean(self):
        username = self.cleaned_data.get("username")
        if not username or not self.cleaned_data.get("password"):
            return super().clean()  # a field is missing: nothing is checked, nothing counts
        ip = client_ip(self.request)
        if ratelimit.login_locked(username=username, ip=ip):
            self.paused = True
            minutes = max(1, settings.LOGIN_LOCKOUT_SECONDS // 60)
            raise forms.ValidationError(
                f"Too many failed attempts. Try again in {minutes} minutes.", code="paused"
            )
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            ratelimit.login_failed(username=username, ip=ip)
            raise
        ratelimit.login_succeeded(username=username, ip=ip)
        return cleaned


class LoginForm(PausedLoginMixin, AuthenticationForm):
    """The product's login (``/login/``)."""


class AdminLoginForm(PausedLoginMixin, AdminAuthenticationForm):
    """The Django admin's login (``/admin/login/``): the same pause, shared
    with ``/login/``, so failures at either count towards it."""
