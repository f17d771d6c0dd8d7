"""Storage adjustments to the eventsourcing recorders, one module per backend."""
