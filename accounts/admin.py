from django import forms
from django.contrib import admin

from audit.services import Actor

from .models import ApiKey, Membership, Organisation
from .services import organisation_save


class MembershipInline(admin.TabularInline):
    """Shown, not edited: the Team page changes members (audited, and it keeps
    at least one owner)."""

    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OrganisationForm(forms.ModelForm):
    class Meta:
        model = Organisation
        fields = ["slug", "name", "timezone", "voice_price_per_minute", "created_at"]

    def clean_timezone(self):
        from .selectors import timezone_valid

        name = self.cleaned_data["timezone"].strip()
        if not timezone_valid(name):
            raise forms.ValidationError(f"'{name}' is not a time zone name such as Europe/Berlin or UTC")
        return name


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    form = OrganisationForm
    list_display = ["name", "slug", "timezone", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change):
        organisation_save(organisation=obj, actor=Actor.for_request(request))


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created with ``create_api_key`` or in Settings, where the
    secret is shown once; here they can be inspected, never re-shown."""

    list_display = ["name", "prefix", "organisation", "scopes", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["organisation"]
    search_fields = ["name", "prefix"]
    readonly_fields = [
        "organisation",
        "name",
        "prefix",
        "secret_hash",
        "scopes",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
