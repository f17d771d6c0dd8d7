"""Read models folded from the event log: the live resolution state, and later the views."""
