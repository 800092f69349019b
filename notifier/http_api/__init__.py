"""The HTTP API for product services and apps (`/api/v1/`, under the app's URLconf): notify and
notify in bulk, read a message and its deliveries, the Web Push public key; authenticated by
API keys that an admin creates and revokes (notifier.services.api_keys). Built on
django-ninja: the request and response schemas are the code's type hints, and the OpenAPI 3
document (`/api/v1/openapi.json`) is generated from them."""
