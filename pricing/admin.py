from django import forms
from django.contrib import admin

from audit.services import Actor
from thinnest_analytics.errors import ApiError

from .models import ModelPrice
from .services import PRICE_FIELDS, model_price_delete, model_price_save, model_price_validate


class ModelPriceForm(forms.ModelForm):
    class Meta:
        model = ModelPrice
        fields = ["organisation", *PRICE_FIELDS]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, required in (("organisation", True), ("match_pattern", False)):
            if name in self.fields:  # a read-only page has no fields
                self.fields[name].required = required

    def clean(self):
        data = super().clean()
        if all(data.get(f) is not None for f in PRICE_FIELDS if f != "match_pattern"):
            try:
                data.update(model_price_validate(**{f: data.get(f) for f in PRICE_FIELDS}))
            except ApiError as exc:
                field, _, message = exc.message.partition(": ")
                self.add_error(field if field in self.fields else None, message or exc.message)
        return data


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Organisations' prices, changed through the audited service. Built-in
    prices ship with the product (migrations) and are read-only here."""

    form = ModelPriceForm
    list_display = [
        "model_name",
        "organisation",
        "match_pattern",
        "input_price_per_mtok",
        "output_price_per_mtok",
        "effective_from",
    ]
    list_filter = ["organisation"]
    search_fields = ["model_name", "match_pattern"]

    def get_readonly_fields(self, request, obj=None):
        return ["organisation"] if obj is not None else []

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (
            obj is None or obj.organisation_id is not None
        )

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (
            obj is None or obj.organisation_id is not None
        )

    def save_model(self, request, obj, form, change):
        saved = model_price_save(
            organisation=obj.organisation,
            actor=Actor.for_request(request),
            price=obj if change else None,
            **{f: form.cleaned_data[f] for f in PRICE_FIELDS},
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        model_price_delete(organisation=obj.organisation, price=obj, actor=Actor.for_request(request))

    def delete_queryset(self, request, queryset):
        for price in queryset.filter(organisation__isnull=False).select_related("organisation"):
            self.delete_model(request, price)
