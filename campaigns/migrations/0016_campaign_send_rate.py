"""A campaign's own send rate (messages a minute, every channel counted), on top of the
providers' limits; empty for existing campaigns: only the providers' limits, as before."""

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0015_fanout_keyed_by_recipient"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="send_rate_per_minute",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="At most this many of its messages go out a minute, every channel counted (on top of the providers' own limits). Empty: only the providers' limits. Part of what approval covers.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(
                        1, "At least 1 message a minute (empty: no limit of its own)."
                    ),
                    django.core.validators.MaxValueValidator(
                        60000, "At most 60,000 a minute; leave it empty for no limit of its own."
                    ),
                ],
                verbose_name="Send rate (messages a minute)",
            ),
        ),
    ]
