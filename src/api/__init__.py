"""The HTTP interface of promptrecord: the FastAPI app, its routes, auth and idempotency."""
