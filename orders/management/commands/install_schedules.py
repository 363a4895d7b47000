from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from orders.schedules import install_schedules


class Command(BaseCommand):
    help = _("Create or update the task cluster's schedules (safe to run again).")

    def handle(self, *args, **options) -> None:
        for name, created in install_schedules():
            self.stdout.write((_("created %(name)s") if created else _("updated %(name)s")) % {"name": name})
