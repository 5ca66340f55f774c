import re

from django import forms
from django.contrib import admin

from .models import ModelPrice


class ModelPriceForm(forms.ModelForm):
    class Meta:
        model = ModelPrice
        fields = [
            "organisation",
            "model_name",
            "match_pattern",
            "input_price_per_mtok",
            "output_price_per_mtok",
            "effective_from",
        ]

    def clean_match_pattern(self):
        pattern = self.cleaned_data["match_pattern"]
        try:
            re.compile(pattern)
        except re.error as exc:
            raise forms.ValidationError(f"not a valid regular expression: {exc}") from None
        return pattern


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
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
