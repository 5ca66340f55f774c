from django.contrib import admin

from .models import Agent, Deployment, Trace


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "public_id", "organisation", "created_at", "archived_at"]
    list_filter = ["organisation"]
    search_fields = ["name", "public_id"]
    readonly_fields = ["organisation", "public_id", "created_at", "updated_at", "archived_at"]

    def has_add_permission(self, request):
        return False  # agents come from ingestion or the agents API (both audited)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["agent", "version", "status", "deployed_at", "deployed_by"]
    list_filter = ["status"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Trace)
class TraceAdmin(admin.ModelAdmin):
    list_display = ["public_id", "agent", "channel", "status", "latency_ms", "cost_usd", "created_at"]
    list_filter = ["status", "channel"]
    search_fields = ["public_id"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
