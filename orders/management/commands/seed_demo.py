"""Create demo merchants, logins and a week of orders showing every status and cause.

Bulk writes that bypass `orders.services` (see `orders.demo`): for demo databases only.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from tqdm import tqdm

from orders import demo


class _ProgressStream:
    """Lets tqdm draw on the command's stderr: OutputWrapper would end every redraw with a
    newline and colour it as an error."""

    def __init__(self, wrapper: Any) -> None:
        self.wrapper = wrapper

    def write(self, text: str) -> None:
        self.wrapper.write(text, style_func=lambda plain: plain, ending="")

    def flush(self) -> None:
        self.wrapper.flush()


class Command(BaseCommand):
    help = _(
        "Create demo merchants, users and orders in every status, with the evidence of every cause of "
        "unreturned orders. Running it again adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--orders", type=int, default=demo.DEFAULT_ORDERS,
            help=_("How many orders to create (default %(default)s).") % {"default": demo.DEFAULT_ORDERS},
        )
        parser.add_argument(
            "--seed", type=int, default=demo.DEFAULT_SEED,
            help=_("Random seed: the same seed creates the same data (default %(default)s).")
            % {"default": demo.DEFAULT_SEED},
        )
        parser.add_argument(
            "--demo-logins", action="store_true",
            help=_("Print the demo logins with their passwords at the end."),
        )
        parser.add_argument("--no-progress", action="store_true", help=_("Do not show a progress bar."))

    def handle(self, *args: Any, orders: int, seed: int, demo_logins: bool, no_progress: bool, **options: Any) -> None:
        if orders < demo.MIN_ORDERS:
            raise CommandError(
                _("Use at least %(minimum)d orders, so that every status and every cause appears.")
                % {"minimum": demo.MIN_ORDERS}
            )
        started = time.monotonic()
        show_progress = not no_progress and self.stderr.isatty()
        with tqdm(
            total=orders, desc=_("Orders"), unit="", file=_ProgressStream(self.stderr),
            disable=not show_progress, leave=False,
        ) as bar:
            result = demo.seed_demo(orders=orders, seed=seed, progress=bar.update)
        if result.created:
            self.stdout.write(
                _(
                    "Created %(orders)d orders (%(unreturned)d unreturned), %(attempts)d payment attempts, "
                    "%(checks)d checks, %(callbacks)d callbacks and %(events)d events in %(seconds).1f s."
                )
                % {
                    "orders": result.orders,
                    "unreturned": sum(result.causes.values()),
                    "attempts": result.attempts,
                    "checks": result.checks,
                    "callbacks": result.callbacks,
                    "events": result.events,
                    "seconds": time.monotonic() - started,
                }
            )
        else:
            self.stdout.write(_("Demo orders already exist; no orders were added."))
        self.print_logins(with_passwords=demo_logins)

    def print_logins(self, *, with_passwords: bool) -> None:
        if not with_passwords:
            self.stdout.write(
                _("Demo users: %(users)s") % {"users": ", ".join(login.username for login in demo.DEMO_LOGINS)}
            )
            return
        username, password, role = _("username"), _("password"), _("role")
        width_user = max(len(username), *(len(login.username) for login in demo.DEMO_LOGINS))
        width_password = max(len(password), *(len(login.password) for login in demo.DEMO_LOGINS))
        lines = [_("Demo logins:"), f"  {username:<{width_user}}  {password:<{width_password}}  {role}"]
        lines += [
            f"  {login.username:<{width_user}}  {login.password:<{width_password}}  {login.describe()}"
            for login in demo.DEMO_LOGINS
        ]
        self.stdout.write("\n".join(lines))
