"""Admin registrations (the support timeline is added below)."""
