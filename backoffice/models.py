"""The backoffice app's models live by topic in its packages; Django finds them here."""

from backoffice.monitoring.models import Heartbeat  # noqa: F401
