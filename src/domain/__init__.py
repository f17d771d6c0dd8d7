"""The domain: aggregates, events, commands, resolution, templates and diffs. Imports nothing else of ours."""
