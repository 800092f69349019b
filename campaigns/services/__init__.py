"""Campaign services: the functions that write."""
