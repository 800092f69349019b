"""HTTP views: the inbox JSON API for the logged-in user."""
