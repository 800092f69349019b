"""Provider webhooks: the views that check each provider's signature (django-anymail's for
email, Twilio's for SMS) and the service that applies each event once (`events`)."""
