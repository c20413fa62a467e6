"""The query surface: the HTTP API, its auth, the history queries and the real-time read."""
