"""Adaptive jitter buffer (issue 4). Nothing in the forwarding path consumes media yet."""
