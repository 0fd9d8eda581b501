"""Status: live processors from their heartbeats, and consumer lag per stream."""
