"""Admin for segments (rules, imported lists, live count) and audience thresholds."""
