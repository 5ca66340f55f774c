from django.contrib import admin

from .models import Budget, LedgerEntry, Subscription, UsageEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown to auditors, never changed here: changes go through the audited
    billing services (API and the billing page)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "organisation", "kind", "amount_usd", "reference", "plan", "created_by"]
    list_filter = ["kind", "organisation", "created_at"]
    search_fields = ["reference", "reason", "created_by"]
    date_hierarchy = "created_at"


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "organisation", "agent", "category", "quantity", "unit", "cost_usd", "at"]
    list_filter = ["category", "organisation"]
    search_fields = ["public_id"]
    date_hierarchy = "at"


@admin.register(Budget)
class BudgetAdmin(ReadOnlyAdmin):
    list_display = ["organisation", "agent", "monthly_usd", "updated_at"]
    list_filter = ["organisation"]


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = ["organisation", "plan", "changed_at"]
