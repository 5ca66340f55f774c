"""Forms of the billing pages. They parse what a person typed; the rules live in
the services, whose refusals the views show as form errors."""

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django import forms

from accounts.selectors import timezone_valid

from .models import LedgerKind
from .schemas import MAX_AMOUNT_USD
from .selectors import local_midnight


def _amount(
    label: str, *, signed: bool = False, required: bool = True, help_text: str = ""
) -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        max_digits=14,
        decimal_places=2,
        min_value=-MAX_AMOUNT_USD if signed else Decimal("0.01"),
        max_value=MAX_AMOUNT_USD,
        required=required,
        help_text=help_text,
    )


class TopUpForm(forms.Form):
    amount_usd = _amount("Amount (USD)", help_text="e.g. 100.00")
    reference = forms.CharField(max_length=200, required=False, help_text="the payment's reference, optional")


class AdjustmentForm(forms.Form):
    amount_usd = _amount("Amount (USD)", signed=True, help_text="positive credits, negative charges")
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class BudgetForm(forms.Form):
    agent = forms.ChoiceField(label="For", required=False)
    monthly_usd = _amount("Monthly budget (USD)", required=False, help_text="empty removes the budget")

    def __init__(self, *args, agent_choices: list[tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].choices = agent_choices or []  # from agents.selectors.agent_choices


class TimezoneForm(forms.Form):
    timezone = forms.CharField(
        max_length=64, help_text="an IANA zone name, e.g. Europe/Berlin or Asia/Kolkata"
    )

    def clean_timezone(self):
        name = self.cleaned_data["timezone"].strip()
        if not timezone_valid(name):
            raise forms.ValidationError(f"'{name}' is not a time zone name such as Europe/Berlin")
        return name


# The ledger's date filter accepts the days a window may span (as the metrics' windows do).
LEDGER_FIRST_DAY, LEDGER_LAST_DAY = date(2000, 1, 1), date(2200, 12, 31)


class LedgerFilterForm(forms.Form):
    kind = forms.ChoiceField(choices=[("", "all kinds"), *LedgerKind.choices], required=False)
    start = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        for name in ("start", "end"):
            day = data.get(name)
            if day is not None and not (LEDGER_FIRST_DAY <= day <= LEDGER_LAST_DAY):
                self.add_error(
                    name, f"pick a day between {LEDGER_FIRST_DAY:%Y-%m-%d} and {LEDGER_LAST_DAY:%Y-%m-%d}"
                )
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("'From' must not be after 'To'")
        return data

    def window(self, zone: ZoneInfo) -> tuple[datetime | None, datetime | None]:
        """The chosen dates, both included, as UTC instants in ``zone``'s days."""
        start, end = self.cleaned_data.get("start"), self.cleaned_data.get("end")
        return (
            local_midnight(start, zone) if start else None,
            local_midnight(end + timedelta(days=1), zone) if end else None,
        )


class ModelPriceForm(forms.Form):
    model_name = forms.CharField(max_length=200, help_text="e.g. gpt-4o-mini")
    match_pattern = forms.CharField(
        max_length=500,
        required=False,
        help_text=(
            "a regular expression (RE2 syntax: no look-around or back-references) for the whole"
            " model name, case-insensitive; empty: exactly the name"
        ),
    )
    input_price_per_mtok = forms.DecimalField(
        label="Input USD per million tokens", max_digits=14, decimal_places=6, min_value=0
    )
    output_price_per_mtok = forms.DecimalField(
        label="Output USD per million tokens", max_digits=14, decimal_places=6, min_value=0
    )
    effective_from = forms.DateTimeField(
        help_text="UTC, e.g. 2026-03-01 00:00; traces from then on use this price",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
