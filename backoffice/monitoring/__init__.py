"""Operations: the task cluster's heartbeat, health and readiness, metrics, alert rules and
incidents, and the staff system page (docs/monitoring.md)."""
