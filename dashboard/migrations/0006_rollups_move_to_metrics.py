from django.db import migrations


class Migration(migrations.Migration):
    """The rollup models now belong to the metrics app, which keeps their tables
    (``dashboard_hourlyrollup``, ``dashboard_dailyrollup``): state only."""

    dependencies = [
        ("dashboard", "0005_sketch_merge_drops_empty_buckets"),
        ("metrics", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="DailyRollup"),
                migrations.DeleteModel(name="HourlyRollup"),
            ],
        ),
    ]
