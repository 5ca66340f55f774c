from django.conf import settings
from django.db import models
from django.utils import timezone as tz


class Organisation(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    # "Today" and "this month" in billing follow this zone.
    timezone = models.CharField(max_length=64, default="UTC")
    # USD per voice minute; null means the installation's default.
    voice_price_per_minute = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    created_at = models.DateTimeField(default=tz.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


# Higher ranks include everything lower ranks may do.
ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=tz.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organisation"], name="membership_unique")]

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


class Scope(models.TextChoices):
    READ = "read"
    INGEST = "ingest"
    ADMIN = "admin"


class ApiKey(models.Model):
    """An organisation's API key. Only a hash of the secret is stored."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=tz.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def actor_id(self) -> str:
        """How this key appears as the actor in the audit log."""
        return f"apikey:{self.prefix}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Invitation(models.Model):
    """An invitation to join an organisation, pending until the invitee accepts
    it: a new account by choosing its password, an existing one on the
    Invitations page once signed in. Accepting, declining and cancelling delete
    it (the audit log keeps the history)."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=150)  # lower-case
    role = models.CharField(max_length=16, choices=Role.choices)
    invited_by = models.CharField(max_length=200)  # the audit log's actor id
    created_at = models.DateTimeField(default=tz.now)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["organisation", "email"], name="invitation_unique")]

    def __str__(self) -> str:
        return f"{self.email} → {self.organisation} ({self.role})"
