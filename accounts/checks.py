"""Deployment checks of the settings the accounts rely on."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def email_is_sent(app_configs, **kwargs) -> list[Warning]:
    """Invitations and alert emails need SMTP; without it they only land in the outbox."""
    backend = settings.MAILERS["default"]["BACKEND"]
    if backend.endswith("smtp.EmailBackend"):
        return []
    return [
        Warning(
            "EMAIL_HOST is not set: invitations and alert emails are not sent, only written to "
            f"{settings.EMAIL_OUTBOX_DIR} (or printed under DEBUG).",
            hint="Set EMAIL_HOST (and EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS).",
            id="accounts.W001",
        )
    ]
