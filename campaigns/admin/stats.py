"""The campaign funnel page in the admin."""
