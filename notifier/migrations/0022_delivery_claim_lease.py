"""A lease on each claim (claimed_until, renewed by a live sender) and the claim's token, so
the re-queue job takes back only claims whose sender died, within seconds.

Claims in flight when this runs get the lease the old fixed timeout gave them (300 s).
Adding nullable columns is a catalog change; the partial index covers `sending` rows only.
"""

from datetime import timedelta

from django.db import migrations, models
from django.db.models import F


def lease_claims_in_flight(apps, schema_editor):
    Delivery = apps.get_model("notifier", "Delivery")
    Delivery.objects.filter(status="sending", claimed_at__isnull=False).update(
        claimed_until=F("claimed_at") + timedelta(seconds=300)
    )


class Migration(migrations.Migration):

    dependencies = [
        ('notifier', '0021_campaign_reasons'),
    ]

    operations = [
        migrations.AddField(
            model_name='delivery',
            name='claimed_until',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='delivery',
            name='claim_token',
            field=models.UUIDField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='delivery',
            index=models.Index(
                condition=models.Q(('status', 'sending')),
                fields=['claimed_until'],
                name='delivery_lease_idx',
            ),
        ),
        migrations.RunPython(lease_claims_in_flight, migrations.RunPython.noop),
    ]
