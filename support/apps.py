from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SupportConfig(AppConfig):
    name = "support"
    verbose_name = _("Support")

    def ready(self) -> None:
        # Each module connects its own receivers to orders.signals.order_state_changed and
        # registers its timeline source and schedules at import.
        from support import notifications, receivers  # noqa: F401
