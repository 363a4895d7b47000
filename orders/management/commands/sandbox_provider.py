"""Run the sandbox payment provider (a fake third party) as an HTTP service.

It uses no database: it is the provider's system, not ours, so it skips system checks and
can run next to a desk that is still migrating.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from orders.providers import sandbox


class Command(BaseCommand):
    help = _(
        "Run the sandbox payment provider on a local port. Its knobs make it slow, failing, "
        "declining, losing or duplicating callbacks; they can also be changed at run time "
        "through POST /v1/control."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        sandbox.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            sandbox.knobs_from_options(options)
            sandbox.serve(options, out=self._say)
        except ValueError as exc:
            # Bad knob values or a missing/invalid signing secret.
            raise CommandError(str(exc)) from exc
        except OSError as exc:
            raise CommandError(
                _("Could not listen on %(host)s:%(port)s: %(error)s")
                % {"host": options["host"], "port": options["port"], "error": exc}
            ) from exc

    def _say(self, text: str) -> None:
        # Flushed at once: a supervisor reading a pipe must see the port before any request.
        self.stdout.write(text)
        self.stdout.flush()
