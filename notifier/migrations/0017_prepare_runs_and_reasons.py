"""Prepare runs recorded while they work, so a run that died is known and the messages that
keep killing their worker are counted and set aside; three reasons for a message that could
not be prepared (render cut off, unreadable, kept crashing).

Adding a column with a constant default is a catalog change on PostgreSQL 11+, not a rewrite.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notifier', '0016_roles'),
    ]

    operations = [
        migrations.CreateModel(
            name='PrepareRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('message_ids', models.JSONField()),
                ('started_at', models.DateTimeField()),
            ],
        ),
        migrations.AddField(
            model_name='message',
            name='prepare_crashes',
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name='delivery',
            name='reason',
            field=models.CharField(blank=True, choices=[('channel_not_allowed', 'The notification type no longer uses this channel'), ('type_inactive', 'The notification type was switched off'), ('user_inactive', "The user's account is inactive"), ('no_email_address', 'No email address on file'), ('no_phone_number', 'No phone number on file'), ('invalid_phone_number', 'The phone number on file is not valid'), ('no_active_device', 'No active push device'), ('opted_out', 'The user switched this category off for this channel'), ('no_consent', 'No marketing consent on record for this channel'), ('marketing_off', 'The user chose to receive no marketing'), ('quiet_hours', "Held for the user's quiet hours; released in their morning"), ('frequency_cap', "Over the user's marketing cap; deferred to the next window"), ('outranked', "A higher-priority message took the user's cap slot; deferred"), ('stale', 'Would have gone out too late to be useful'), ('backpressure', 'Held while the bulk queues were too deep; released later'), ('scheduled', "Scheduled for the user's own time of day"), ('campaign_paused', 'Held while its campaign is paused'), ('missed', 'Its moment passed (campaign paused or late); not sent late'), ('circuit_open', 'The provider is failing; waiting for it to recover'), ('render_failed', 'The template could not be rendered'), ('render_timeout', 'Rendering took too long and was stopped'), ('unreadable', 'The message could not be read from the database'), ('prepare_crashed', 'Preparing it stopped the worker again and again; set aside'), ('invalid_recipient', 'The provider rejected the address or number'), ('address_suppressed', 'The address bounced or complained; suppressed'), ('undelivered', 'The provider could not deliver it to the handset or mailbox'), ('device_unregistered', 'The push token is no longer registered'), ('provider_rejected', 'The provider refused the message'), ('provider_not_configured', 'No provider is configured for this'), ('retries_exhausted', 'Every retry failed with a temporary error'), ('retry_scheduled', 'A temporary error; a retry is scheduled'), ('claim_expired', 'A worker stopped mid-send; the delivery was re-queued'), ('cancelled', 'Cancelled')], default='', max_length=40),
        ),
        migrations.AlterField(
            model_name='deliveryevent',
            name='reason',
            field=models.CharField(blank=True, choices=[('channel_not_allowed', 'The notification type no longer uses this channel'), ('type_inactive', 'The notification type was switched off'), ('user_inactive', "The user's account is inactive"), ('no_email_address', 'No email address on file'), ('no_phone_number', 'No phone number on file'), ('invalid_phone_number', 'The phone number on file is not valid'), ('no_active_device', 'No active push device'), ('opted_out', 'The user switched this category off for this channel'), ('no_consent', 'No marketing consent on record for this channel'), ('marketing_off', 'The user chose to receive no marketing'), ('quiet_hours', "Held for the user's quiet hours; released in their morning"), ('frequency_cap', "Over the user's marketing cap; deferred to the next window"), ('outranked', "A higher-priority message took the user's cap slot; deferred"), ('stale', 'Would have gone out too late to be useful'), ('backpressure', 'Held while the bulk queues were too deep; released later'), ('scheduled', "Scheduled for the user's own time of day"), ('campaign_paused', 'Held while its campaign is paused'), ('missed', 'Its moment passed (campaign paused or late); not sent late'), ('circuit_open', 'The provider is failing; waiting for it to recover'), ('render_failed', 'The template could not be rendered'), ('render_timeout', 'Rendering took too long and was stopped'), ('unreadable', 'The message could not be read from the database'), ('prepare_crashed', 'Preparing it stopped the worker again and again; set aside'), ('invalid_recipient', 'The provider rejected the address or number'), ('address_suppressed', 'The address bounced or complained; suppressed'), ('undelivered', 'The provider could not deliver it to the handset or mailbox'), ('device_unregistered', 'The push token is no longer registered'), ('provider_rejected', 'The provider refused the message'), ('provider_not_configured', 'No provider is configured for this'), ('retries_exhausted', 'Every retry failed with a temporary error'), ('retry_scheduled', 'A temporary error; a retry is scheduled'), ('claim_expired', 'A worker stopped mid-send; the delivery was re-queued'), ('cancelled', 'Cancelled')], default='', max_length=40),
        ),
    ]
