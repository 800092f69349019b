"""End users' pages and their JSON API: the inbox (page and API) and the preference centre
with one-click unsubscribe. Signed links come from notifier.links."""
