from django.db import migrations


class Migration(migrations.Migration):
    """The model price table now belongs to the pricing app, which keeps the
    table (``billing_modelprice``): state only."""

    dependencies = [
        ("billing", "0004_ledger_append_only_and_unpriced_index"),
        ("pricing", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ModelPrice")],
        ),
    ]
