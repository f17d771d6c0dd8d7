"""One router per resource, mounted under /v1 by the app (health checks at the root)."""
