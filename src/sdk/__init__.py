"""The promptrecord client library; imports nothing of the server."""
