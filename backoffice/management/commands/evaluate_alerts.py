"""Evaluate the alert rules from outside the task cluster (cron, a systemd timer, a sidecar),
so that "task cluster down" is noticed when the cluster is the thing that is down."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from backoffice.monitoring.alerts import run_evaluation
from backoffice.monitoring.notify import send_due_incident_notifications
from backoffice.monitoring.watchdog import PERIOD, run_forever


class Command(BaseCommand):
    help = _("Evaluate the alert rules, open and resolve incidents, and send their notifications.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--loop", action="store_true",
                            help=_("Keep evaluating every --interval seconds until stopped."))
        parser.add_argument("--interval", type=float, default=PERIOD, help=_("Seconds between rounds with --loop."))
        parser.add_argument("--force", action="store_true",
                            help=_("Evaluate now even if another evaluator did within the last minute."))

    def handle(self, *args, loop: bool, interval: float, force: bool, **options) -> None:
        if not loop:
            result = run_evaluation(force=force)
            if result is None:
                self.stdout.write(_("Skipped: another evaluator ran within the last minute (use --force)."))
                sent = send_due_incident_notifications()
                self.stdout.write(_("%(sent)d notifications sent.") % {"sent": sent})
            else:
                self.stdout.write(str(result))
            return
        def show(outcome: str) -> None:
            self.stdout.write(outcome)
            self.stdout.flush()

        try:
            # A failed round (the database restarting) is logged and the loop goes on.
            run_forever(period=interval, on_round=show)
        except KeyboardInterrupt:
            return
