"""Code the test modules share (on pytest's `pythonpath`, as `support`)."""
