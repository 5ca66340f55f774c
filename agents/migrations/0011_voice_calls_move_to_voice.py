"""Voice calls and turns now belong to the voice app (``voice.0001_initial``).
Their tables stay where they are: only Django's picture of the models moves,
and their content types (with the permissions that name them) follow."""

from django.db import migrations

MODELS = ("voicecall", "voiceturn")


def _relabel(apps, source: str, target: str) -> None:
    content_types = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        if not content_types.objects.filter(app_label=target, model=model).exists():
            content_types.objects.filter(app_label=source, model=model).update(app_label=target)


def to_voice(apps, schema_editor):
    _relabel(apps, "agents", "voice")


def to_agents(apps, schema_editor):
    _relabel(apps, "voice", "agents")


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0010_list_indexes"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("voice", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="VoiceTurn"),
                migrations.DeleteModel(name="VoiceCall"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(to_voice, to_agents),
    ]
