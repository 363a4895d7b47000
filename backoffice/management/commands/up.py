"""Set up and run the whole product in one process tree: web server and task cluster.

Used by `make run`. Prepares the database (migrate, cache table, demo data when the
database is empty), then starts the services as child processes and supervises them:
one Ctrl-C (or SIGTERM) stops them all, and if one dies the others are stopped too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from orders.demo import DEMO_LOGINS


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = field(default=None, repr=False)


class Command(BaseCommand):
    help = _("Migrate, seed demo data if the database is empty, then run the web server and the task cluster.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--orders", type=int, default=int(os.environ.get("DEMO_ORDERS", "3000")),
                            help=_("How many demo orders to create on an empty database."))
        parser.add_argument("--no-seed", action="store_true", help=_("Do not create demo data."))
        parser.add_argument("--no-sandbox", action="store_true",
                            help=_("Do not start the sandbox payment provider and the demo order traffic."))
        parser.add_argument("--sandbox-port", type=int, default=int(os.environ.get("SANDBOX_PORT", "8100")))
        parser.add_argument("--prepare-only", action="store_true", help=_("Set up the database, start nothing."))

    def handle(self, *args, host: str, port: int, orders: int, no_seed: bool, prepare_only: bool, no_sandbox: bool,
               sandbox_port: int, **options) -> None:
        self.prepare(orders=orders, seed=not no_seed)
        if prepare_only:
            return
        if not no_sandbox:
            # The children (web, tasks, traffic) must query the sandbox where it listens.
            os.environ.setdefault("SANDBOX_PROVIDER_URL", f"http://127.0.0.1:{sandbox_port}")
        if "SITE_URL" not in os.environ:
            # Links in emails (status pages, incidents) point at this server, on whatever port;
            # this process sends some of them too (the alert watchdog).
            os.environ["SITE_URL"] = settings.SITE_URL = f"http://{host}:{port}"
        children = self.children(host, port, sandbox_port=None if no_sandbox else sandbox_port)
        self.banner(host, port, sandbox_port=None if no_sandbox else sandbox_port)
        # Alert rules are evaluated here too, so "task cluster down" is noticed (and notified)
        # when the cluster is the thing that stopped (docs/monitoring.md).
        from backoffice.monitoring.watchdog import start_watchdog

        start_watchdog()
        self.supervise(children)

    # --- setup ---------------------------------------------------------------------------

    def prepare(self, *, orders: int, seed: bool) -> None:
        from orders.models import Order

        self.stdout.write(_("Applying migrations…"))
        call_command("migrate", interactive=False, verbosity=0)
        call_command("createcachetable", verbosity=0)
        if seed and not Order.objects.exists():
            self.stdout.write(_("Empty database: creating %(count)d demo orders…") % {"count": orders})
            call_command("seed_demo", orders=orders, stdout=self.stdout, stderr=self.stderr)
        call_command("install_schedules", stdout=self.stdout)

    # --- processes -----------------------------------------------------------------------

    def children(self, host: str, port: int, *, sandbox_port: int | None) -> list[Child]:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        children = [
            Child("web", [*manage, "runserver", f"{host}:{port}", "--noreload"]),
            Child("tasks", [*manage, "qcluster"]),
        ]
        if sandbox_port is not None and "sandbox" in settings.PAYMENT_PROVIDERS:
            children += [
                # A payment provider that misbehaves the way real ones do, so the engine has work.
                Child("sandbox", [
                    *manage, "sandbox_provider", "--port", str(sandbox_port),
                    "--webhook-url", f"http://{host}:{port}/webhooks/sandbox/",
                    "--pending-seconds", "20", "--lost-callback-rate", "0.3", "--decline-rate", "0.05",
                    "--timeout-rate", "0.05", "--hang-seconds", "8", "--action-required-rate", "0.1",
                    "--amount-mismatch-rate", "0.01", "--duplicate-success-rate", "0.01",
                ]),
                Child("traffic", [*manage, "demo_traffic", "--interval", "6"]),
            ]
        return children

    def banner(self, host: str, port: int, *, sandbox_port: int | None) -> None:
        base = f"http://{host}:{port}"
        lines = [
            "",
            _("Order Recovery Desk is starting."),
            _("  Back-office (admin):  %(url)s/admin/") % {"url": base},
            _("  Merchant portal:      %(url)s/merchant/ (log in at %(url)s/accounts/login/)") % {"url": base},
            "",
        ]
        if sandbox_port is not None:
            lines += [
                _("  Sandbox provider:     http://%(host)s:%(port)d/v1/control (knobs)") % {"host": host, "port": sandbox_port},
                _("  Demo traffic: a new order paid at the sandbox every 6 seconds."),
            ]
        lines += [
            "",
            _("Demo logins (username / password):"),
        ]
        lines += [f"  {login.username:<10} {login.password:<16} {login.describe()}" for login in DEMO_LOGINS]
        lines += ["", _("Press Ctrl-C once to stop the web server and the task cluster."), ""]
        self.stdout.write("\n".join(lines))

    def supervise(self, children: list[Child]) -> None:
        stopping = False

        def request_stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        for child in children:
            # Each child gets its own session, so the terminal's Ctrl-C reaches only us and
            # we stop each child by signalling its main process (a django-q2 cluster whose
            # whole process group is signalled can hang in "stopping").
            child.process = subprocess.Popen(child.argv, start_new_session=True)
        exit_code = 0
        try:
            while not stopping:
                for child in children:
                    code = child.process.poll()
                    if code is not None:
                        self.stderr.write(_("%(name)s stopped (exit code %(code)s); stopping the rest.")
                                          % {"name": child.name, "code": code})
                        exit_code = code or 1
                        stopping = True
                        break
                time.sleep(0.3)
        finally:
            self.stop(children)
        if exit_code:
            sys.exit(exit_code)

    def stop(self, children: list[Child]) -> None:
        self.stdout.write(_("Stopping…"))
        for child in children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in children:
            if not child.process:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(_("%(name)s did not stop in time; killing it.") % {"name": child.name})
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        self.stdout.write(_("Stopped."))
