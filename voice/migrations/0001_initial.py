"""Voice calls and turns, moved from the agents app with their tables
(``agents_voicecall``, ``agents_voiceturn``, created by ``agents.0006_voice_calls``):
this migration only tells Django they are the voice app's models now."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('accounts', '0001_initial'),
        ('agents', '0010_list_indexes'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='VoiceCall',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('public_id', models.CharField(max_length=200)),
                        ('deployment_version', models.CharField(blank=True, max_length=64)),
                        ('from_number', models.CharField(blank=True, max_length=64)),
                        ('to_number', models.CharField(blank=True, max_length=64)),
                        ('status', models.CharField(choices=[('active', 'Active'), ('completed', 'Completed'), ('failed', 'Failed'), ('dropped', 'Dropped')], default='active', max_length=16)),
                        ('started_at', models.DateTimeField()),
                        ('ended_at', models.DateTimeField(blank=True, null=True)),
                        ('last_event_at', models.DateTimeField()),
                        ('last_received_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('duration_s', models.DecimalField(blank=True, decimal_places=3, max_digits=20, null=True)),
                        ('price_per_minute', models.DecimalField(blank=True, decimal_places=6, max_digits=12, null=True)),
                        ('cost_usd', models.DecimalField(blank=True, decimal_places=10, max_digits=20, null=True)),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('agent', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='voice_calls', to='agents.agent')),
                        ('organisation', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.organisation')),
                        ('session', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='voice_call', to='agents.session')),
                    ],
                    options={
                        'db_table': 'agents_voicecall',
                    },
                ),
                migrations.CreateModel(
                    name='VoiceTurn',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('key', models.CharField(max_length=200)),
                        ('at', models.DateTimeField()),
                        ('voice_latency_ms', models.IntegerField()),
                        ('interrupted', models.BooleanField()),
                        ('transcription_confidence', models.FloatField(blank=True, null=True)),
                        ('received_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('agent', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='agents.agent')),
                        ('call', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='turns', to='voice.voicecall')),
                        ('organisation', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.organisation')),
                    ],
                    options={
                        'db_table': 'agents_voiceturn',
                    },
                ),
                migrations.AddIndex(
                    model_name='voicecall',
                    index=models.Index(fields=['agent', 'started_at'], name='voice_call_agent_start'),
                ),
                migrations.AddIndex(
                    model_name='voicecall',
                    index=models.Index(fields=['agent', 'ended_at'], name='voice_call_agent_end'),
                ),
                migrations.AddIndex(
                    model_name='voicecall',
                    index=models.Index(fields=['organisation', 'ended_at'], name='voice_call_org_end'),
                ),
                migrations.AddIndex(
                    model_name='voicecall',
                    index=models.Index(condition=models.Q(('ended_at__isnull', True)), fields=['agent'], name='voice_call_agent_active'),
                ),
                migrations.AddIndex(
                    model_name='voicecall',
                    index=models.Index(condition=models.Q(('ended_at__isnull', True)), fields=['last_received_at'], name='voice_call_open_received'),
                ),
                migrations.AddConstraint(
                    model_name='voicecall',
                    constraint=models.UniqueConstraint(fields=('organisation', 'public_id'), name='voice_call_public_id'),
                ),
                migrations.AddIndex(
                    model_name='voiceturn',
                    index=models.Index(fields=['agent', 'at'], name='voice_turn_agent_time'),
                ),
                migrations.AddConstraint(
                    model_name='voiceturn',
                    constraint=models.UniqueConstraint(fields=('call', 'key'), name='voice_turn_key'),
                ),
            ],
            database_operations=[],
        ),
    ]
