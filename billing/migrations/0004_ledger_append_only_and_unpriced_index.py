"""The ledger is append-only in the database too (PostgreSQL), and unpriced
traces are found without scanning every trace.

A trigger refuses UPDATE and DELETE of ledger entries and TRUNCATE of the table.
TRUNCATE passes only for a session that set ``thinnest.audit_log_truncate`` to
``allow`` — the ``flush`` command does, for the audit log and the ledger alike.

The partial index holds only unpriced traces (few, and they should be fixed), so
the billing page counts and lists them per organisation and time at no cost to
ingestion of priced traces. It lives here because the billing page is its only
reader.
"""

from django.db import migrations

CREATE_TRIGGER = """
CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE'
       AND coalesce(current_setting('thinnest.audit_log_truncate', true), '') = 'allow' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_no_update_delete
    BEFORE UPDATE OR DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE TRIGGER ledger_no_truncate
    BEFORE TRUNCATE ON billing_ledgerentry
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
"""

DROP_TRIGGER = """
DROP TRIGGER IF EXISTS ledger_no_truncate ON billing_ledgerentry;
DROP TRIGGER IF EXISTS ledger_no_update_delete ON billing_ledgerentry;
DROP FUNCTION IF EXISTS ledger_refuse_change();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE_TRIGGER, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRIGGER, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0005_phone_numbers_and_version_labels"),
        ("billing", "0003_ledger_usage_budgets"),
    ]

    operations = [
        migrations.RunPython(create_trigger, drop_trigger),
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS trace_unpriced ON agents_trace (organisation_id, created_at) "
            "WHERE cost_source = 'unpriced'",
            "DROP INDEX IF EXISTS trace_unpriced",
        ),
    ]
