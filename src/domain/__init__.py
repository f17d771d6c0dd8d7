"""The domain: aggregates, events, commands, resolution; imports nothing else of ours."""
