"""Real local servers that tests and benchmarks talk to (no mocks)."""
