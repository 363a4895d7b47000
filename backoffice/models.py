"""The backoffice app's models live by topic in its packages; Django finds them here."""

from backoffice.monitoring.models import (  # noqa: F401
    AlertRule,
    Heartbeat,
    Incident,
    IncidentEvent,
    IncidentNotification,
)
