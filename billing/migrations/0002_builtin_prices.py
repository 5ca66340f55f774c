"""Built-in list prices (USD per million tokens) for common models.
Organisations override them with their own rows."""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import migrations

# (name, pattern, input, output); patterns allow a provider prefix and a date suffix.
PRICES = [
    ("gpt-4o", r"(openai/)?gpt-4o(-\d{4}-\d{2}-\d{2})?", "2.50", "10.00"),
    ("gpt-4o-mini", r"(openai/)?gpt-4o-mini(-\d{4}-\d{2}-\d{2})?", "0.15", "0.60"),
    ("gpt-4.1", r"(openai/)?gpt-4\.1(-\d{4}-\d{2}-\d{2})?", "2.00", "8.00"),
    ("gpt-4.1-mini", r"(openai/)?gpt-4\.1-mini(-\d{4}-\d{2}-\d{2})?", "0.40", "1.60"),
    ("gpt-4.1-nano", r"(openai/)?gpt-4\.1-nano(-\d{4}-\d{2}-\d{2})?", "0.10", "0.40"),
    ("o3", r"(openai/)?o3(-\d{4}-\d{2}-\d{2})?", "2.00", "8.00"),
    ("o4-mini", r"(openai/)?o4-mini(-\d{4}-\d{2}-\d{2})?", "1.10", "4.40"),
    ("claude-sonnet-4", r"(anthropic/)?claude-sonnet-4(-5)?(-\d{8})?", "3.00", "15.00"),
    ("claude-opus-4", r"(anthropic/)?claude-opus-4(-1)?(-\d{8})?", "15.00", "75.00"),
    ("claude-3-5-haiku", r"(anthropic/)?claude-(3-5-haiku|haiku-4-5)(-\d{8}|-latest)?", "0.80", "4.00"),
    ("gemini-2.5-pro", r"(google/)?gemini-2\.5-pro", "1.25", "10.00"),
    ("gemini-2.5-flash", r"(google/)?gemini-2\.5-flash", "0.30", "2.50"),
]
EFFECTIVE_FROM = datetime(2024, 1, 1, tzinfo=UTC)


def add_prices(apps, schema_editor):
    ModelPrice = apps.get_model("billing", "ModelPrice")
    for name, pattern, input_price, output_price in PRICES:
        ModelPrice.objects.get_or_create(
            organisation=None,
            model_name=name,
            effective_from=EFFECTIVE_FROM,
            defaults={
                "match_pattern": pattern,
                "input_price_per_mtok": Decimal(input_price),
                "output_price_per_mtok": Decimal(output_price),
            },
        )


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(add_prices, migrations.RunPython.noop)]
