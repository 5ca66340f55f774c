import uuid

import django.utils.timezone
from django.db import migrations, models


def give_each_a_delivery_id(apps, schema_editor):
    Notification = apps.get_model("alerts", "Notification")
    for notification in Notification.objects.filter(delivery_id__isnull=True).only("pk"):
        Notification.objects.filter(pk=notification.pk).update(delivery_id=uuid.uuid4())


def due_now_unless_done(apps, schema_editor):
    Notification = apps.get_model("alerts", "Notification")
    Notification.objects.filter(status="sent").update(next_attempt_at=None)


class Migration(migrations.Migration):

    dependencies = [
        ("alerts", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="delivery_id",
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.RunPython(give_each_a_delivery_id, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="notification",
            name="delivery_id",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
        migrations.AddField(
            model_name="notification",
            name="lease_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="notification",
            name="next_attempt_at",
            field=models.DateTimeField(blank=True, default=django.utils.timezone.now, null=True),
        ),
        migrations.RunPython(due_now_unless_done, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="notification",
            name="status",
            field=models.CharField(
                choices=[("pending", "Pending"), ("sending", "Sending"), ("sent", "Sent"), ("failed", "Failed")],
                default="pending",
                max_length=8,
            ),
        ),
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(fields=["status", "next_attempt_at"], name="notification_due"),
        ),
    ]
