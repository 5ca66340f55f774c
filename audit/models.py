from django.db import models
from django.utils import timezone


class AppendOnlyError(Exception):
    """An attempt to change or delete an audit entry."""


class AuditLogQuerySet(models.QuerySet):
    """Entries can be added and read; every path that would rewrite or remove
    them refuses. On PostgreSQL a trigger refuses as well (migration 0002)."""

    def update(self, **kwargs):
        raise AppendOnlyError("audit entries cannot be changed")

    def bulk_update(self, objs, fields, batch_size=None):
        raise AppendOnlyError("audit entries cannot be changed")

    def delete(self):
        raise AppendOnlyError("audit entries cannot be deleted")

    delete.queryset_only = True


class AuditLog(models.Model):
    """One platform action. Append-only: rows are never changed or deleted."""

    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.PROTECT, related_name="audit_logs"
    )
    # The person (username) or "apikey:<prefix>" or "system:<what>".
    user_id = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["organisation", "-id"], name="audit_org_id"),
            models.Index(fields=["organisation", "action"], name="audit_org_action"),
            models.Index(fields=["organisation", "resource_type", "resource_id"], name="audit_org_resource"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.resource_type}:{self.resource_id} by {self.user_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("audit entries cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("audit entries cannot be deleted")
