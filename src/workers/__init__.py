"""Background work: Dramatiq broker, actors, dispatcher (evals, webhooks, metrics)."""
