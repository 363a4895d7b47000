"""The outbox of customer notifications."""
