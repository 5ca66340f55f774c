import csv
import json

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from thinnest_analytics.formatting import csv_cell

from .models import AuditLog

CSV_COLUMNS = [
    "id",
    "created_at",
    "organisation",
    "user_id",
    "action",
    "resource_type",
    "resource_id",
    "ip_address",
    "details",
]


def audit_log_csv(entries: QuerySet) -> HttpResponse:
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-log-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for e in entries.select_related("organisation").iterator(chunk_size=2000):
        row = [
            e.pk,
            e.created_at.isoformat(),
            e.organisation.slug,
            e.user_id,
            e.action,
            e.resource_type,
            e.resource_id,
            e.ip_address,
            json.dumps(e.details, sort_keys=True, ensure_ascii=False),
        ]
        writer.writerow([csv_cell(v) for v in row])
    return response


@admin.action(description="Export selected entries as CSV", permissions=["view"])
def export_csv(modeladmin, request, queryset):
    return audit_log_csv(queryset.order_by("-id"))


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: the audit log is append-only.
    "Export CSV" on the list exports what the current filters and search show."""

    change_list_template = "admin/audit/auditlog/change_list.html"
    list_display = [
        "created_at",
        "organisation",
        "user_id",
        "action",
        "resource_type",
        "resource_id",
        "ip_address",
    ]
    list_filter = ["action", "resource_type", "user_id", "created_at", "organisation"]
    search_fields = ["user_id", "resource_id", "action", "resource_type"]
    date_hierarchy = "created_at"
    list_select_related = ["organisation"]
    show_full_result_count = False
    actions = [export_csv]
    fields = [
        "created_at",
        "organisation",
        "user_id",
        "ip_address",
        "action",
        "resource_type",
        "resource_id",
        "details_pretty",
    ]
    readonly_fields = fields

    @admin.display(description="details")
    def details_pretty(self, obj: AuditLog) -> str:
        text = json.dumps(obj.details, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html('<pre class="audit-details">{}</pre>', text)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        export = self.admin_site.admin_view(self.export_view)
        return [path("export.csv", export, name="audit_auditlog_export")] + super().get_urls()

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The changelist's entries as CSV, with its filters, search and date drill-down."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("unknown filter in the query string")
        return audit_log_csv(changelist.get_queryset(request).order_by("-id"))
