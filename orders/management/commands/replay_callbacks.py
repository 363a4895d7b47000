from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from orders.models import ProviderCallback
from orders.webhooks import process_callback


class Command(BaseCommand):
    help = _("Process journaled provider callbacks again (verified ones only).")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--failed", action="store_true", help=_("Replay every verified callback not yet processed."))
        parser.add_argument("--ids", nargs="+", type=int, default=[], help=_("Replay these callback ids."))

    def handle(self, *args, failed: bool, ids: list[int], **options) -> None:
        if not failed and not ids:
            raise CommandError(_("Say which callbacks: --failed, or --ids 12 13."))
        callbacks = ProviderCallback.objects.filter(signature_valid=True)
        if ids:
            callbacks = callbacks.filter(pk__in=ids)
            missing = set(ids) - set(callbacks.values_list("pk", flat=True))
            if missing:
                self.stderr.write(_("Not found or not verified: %(ids)s") % {"ids": ", ".join(map(str, sorted(missing)))})
        if failed:
            callbacks = callbacks.filter(processed_at__isnull=True)
        done = failed_count = 0
        for callback in callbacks.order_by("received_at", "pk"):
            if process_callback(callback):
                done += 1
            else:
                failed_count += 1
                self.stderr.write(_("Callback %(id)s failed again: %(error)s") % {"id": callback.pk, "error": callback.error})
        self.stdout.write(_("%(done)d replayed, %(failed)d failed.") % {"done": done, "failed": failed_count})
        if failed_count:
            raise SystemExit(1)
