import django.db.models.deletion
from django.db import migrations, models


def copy_trace_facts(apps, schema_editor):
    columns = ("agent_id", "channel", "deployment_version")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "UPDATE agents_score s SET agent_id = t.agent_id, channel = t.channel, "
            "deployment_version = t.deployment_version, trace_created_at = t.created_at "
            "FROM agents_trace t WHERE s.trace_id = t.id"
        )
        return
    sets = ", ".join(f"{c} = (SELECT t.{c} FROM agents_trace t WHERE t.id = agents_score.trace_id)" for c in columns)
    schema_editor.execute(
        f"UPDATE agents_score SET {sets}, "
        "trace_created_at = (SELECT t.created_at FROM agents_trace t WHERE t.id = agents_score.trace_id)"
    )


class Migration(migrations.Migration):
    dependencies = [("agents", "0002_lean_indexes")]

    operations = [
        migrations.AddField(
            model_name="score",
            name="agent",
            field=models.ForeignKey(
                null=True, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="agents.agent"
            ),
        ),
        migrations.AddField(
            model_name="score",
            name="channel",
            field=models.CharField(
                default="chat", max_length=16, choices=[("chat", "Chat"), ("voice", "Voice"), ("widget", "Widget")]
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="score",
            name="deployment_version",
            field=models.CharField(blank=True, max_length=64, default=""),
            preserve_default=False,
        ),
        migrations.AddField(model_name="score", name="trace_created_at", field=models.DateTimeField(null=True)),
        migrations.RunPython(copy_trace_facts, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="score",
            name="agent",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="agents.agent"
            ),
        ),
        migrations.AlterField(model_name="score", name="trace_created_at", field=models.DateTimeField()),
        migrations.AddIndex(
            model_name="score", index=models.Index(fields=["organisation", "trace_created_at"], name="score_org_time")
        ),
        migrations.AddIndex(
            model_name="score", index=models.Index(fields=["agent", "trace_created_at"], name="score_agent_time")
        ),
    ]
