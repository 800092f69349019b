"""Services: the functions that write. Tasks, views and the public API call these."""
