from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("otel", "0005_compacted_spans_move")]

    operations = [migrations.RemoveField(model_name="receivedtrace", name="compacted_spans")]
