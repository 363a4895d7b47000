"""API benchmarks: one merchant's order list, and order intake through gunicorn.

Lists: `GET /api/v1/orders/?page_size=50` as a merchant user (operator of `bench-01`, the
dataset's large merchant with 120,000 orders), token auth, through Django's test Client in this
process: the time is the server's, from the request entering the handler to the rendered
response. Pages: the first page unfiltered, `unreturned=true`, the merchant's most common cause,
a search by exact reference, and the page its `next` cursor points to. p50 and p95 over
`runs` requests after a few warm ones. The merchant portal's order list
(`/merchant/<code>/orders/`, session login, the same filters) is measured the same way when
that URL exists (`portal_pages`): every page is one `ListPage`, so another page is one more entry.

Intake: gunicorn with the project's `gunicorn.conf.py` (production settings: DEBUG off) against
the benchmark database, and `clients` processes, each on one kept-alive `http.client`
connection, POSTing `/api/v1/orders/` one after another with a token, a unique reference and
(in the main run) a unique `Idempotency-Key`. Orders/s counts 201 answers only; anything else
is a failure and reported. The orders created are deleted afterwards.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

from bench.dataset import BIG_MERCHANT, Dataset
from bench.report import Result, median

ROOT = Path(__file__).resolve().parent.parent
# Targets from issue 6.
LIST_TARGET_P95_MS = 50.0
INTAKE_TARGET_PER_S = 300.0
QUERY_LIMIT = 10
BENCH_USERNAME = "bench-api-merchant"
REFERENCE_PREFIX = "APIB-"
# A merchant system sending 300 orders/s needs a write rate above the default 120/min; the
# throttle still runs (and costs what it costs) on every request.
BENCH_WRITE_RATE = "100000/min"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# --- the merchant user ---------------------------------------------------------------------------


def bench_user():
    """An operator of the large merchant, with an API token (created once, reused)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from orders.models import Merchant, MerchantMembership

    user, _ = get_user_model().objects.get_or_create(username=BENCH_USERNAME, defaults={"email": "api@example.com"})
    merchant = Merchant.objects.get(code=BIG_MERCHANT)
    MerchantMembership.objects.update_or_create(user=user, merchant=merchant,
                                                defaults={"role": MerchantMembership.Role.OPERATOR})
    token, _ = Token.objects.get_or_create(user=user)
    return user, merchant, token.key


# --- lists ---------------------------------------------------------------------------------------


@dataclass
class ListPage:
    key: str
    label: str
    url: str  # path and query string; for `follow_next`, the page whose next cursor is measured
    auth: str = "token"  # token (API) | session (HTML pages)
    follow_next: bool = False  # measure the page the first one's `next` link points to
    target_ms: float | None = LIST_TARGET_P95_MS
    runs_ms: list[float] = field(default_factory=list)
    queries: int = 0
    rows: int = 0
    measured_url: str = ""

    @property
    def p50(self) -> float:
        return median(self.runs_ms)

    @property
    def p95(self) -> float:
        return percentile(self.runs_ms, 95)

    @property
    def ok(self) -> bool:
        return (self.target_ms is None or self.p95 <= self.target_ms) and self.queries <= QUERY_LIMIT


def api_pages(*, cause: str, reference: str) -> list[ListPage]:
    base = "/api/v1/orders/?page_size=50"
    return [
        ListPage("api_first", "first page", base),
        ListPage("api_unreturned", "`unreturned=true`", base + "&unreturned=true"),
        ListPage("api_cause", f"`cause={cause}`", base + f"&cause={cause}"),
        ListPage("api_search", "`search=` an exact reference", base + f"&search={reference}"),
        ListPage("api_page2", "second page (the `next` cursor)", base, follow_next=True),
    ]


def portal_url(merchant_code: str) -> str:
    return f"/merchant/{merchant_code}/orders/"


def portal_available(merchant_code: str) -> bool:
    from django.urls import Resolver404, resolve

    try:
        resolve(portal_url(merchant_code))
    except Resolver404:
        return False
    return True


def portal_pages(*, merchant_code: str, cause: str, reference: str) -> list[ListPage]:
    """The merchant portal's order list (HTML, session login as a member), the API's filters."""
    base = portal_url(merchant_code)
    return [
        ListPage("portal_first", "portal: first page", base, auth="session"),
        ListPage("portal_unreturned", "portal: `unreturned=true`", base + "?unreturned=true", auth="session"),
        ListPage("portal_cause", f"portal: `cause={cause}`", base + f"?cause={cause}", auth="session"),
        ListPage("portal_search", "portal: `search=` an exact reference", base + f"?search={reference}", auth="session"),
        ListPage("portal_page2", "portal: second page", base, auth="session", follow_next=True),
    ]


def _next_url(response, page_path: str) -> str | None:
    """The next page's path and query: the JSON `next`, or an HTML link to it (maybe `?query` alone)."""
    if response["Content-Type"].startswith("application/json"):
        link = response.json().get("next")
    else:
        html = response.content.decode()
        match = re.search(r'<a[^>]*rel="next"[^>]*href="([^"]+)"', html) or re.search(
            r'<a[^>]*href="([^"]*(?:cursor|page)=[^"]*)"[^>]*rel="next"', html) or re.search(
            r'href="([^"]*[?&]cursor=[^"]*)"', html)
        link = unescape(match.group(1)) if match else None
    if not link:
        return None
    parts = urlsplit(link)
    return (parts.path or page_path) + (f"?{parts.query}" if parts.query else "")


def _rows(response) -> int:
    if response["Content-Type"].startswith("application/json"):
        return len(response.json().get("results", []))
    # HTML: the table's rows, less its header row.
    return max(response.content.decode().count("<tr") - 1, 0)


def _clients(user, token: str):
    from django.test import Client

    token_client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    session_client = Client()
    session_client.force_login(user)
    return {"token": token_client, "session": session_client}


def _get(client, url: str) -> tuple[float, object]:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}: {response.content[:300]!r}")
    return elapsed, response


def measure_page(page: ListPage, client, *, runs: int, warm: int = 5) -> ListPage:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    url = page.url
    if page.follow_next:
        _, first = _get(client, url)
        url = _next_url(first, urlsplit(page.url).path)
        if url is None:
            raise RuntimeError(f"{page.url} has no next page")
    page.measured_url = url
    for _ in range(warm):
        _get(client, url)
    reset_queries()
    with CaptureQueriesContext(connection) as captured:
        _, response = _get(client, url)
    page.queries = len(captured)
    page.rows = _rows(response)
    page.runs_ms = [_get(client, url)[0] for _ in range(runs)]
    return page


def _list_inputs(merchant) -> tuple[str, list[str]]:
    """The merchant's most common cause now, and references of its orders spread over the table."""
    from django.db.models import Count

    from orders.models import Order

    flagged = Order.objects.filter(merchant=merchant, stuck_since__isnull=False)
    top = flagged.values("stuck_cause").annotate(n=Count("id")).order_by("-n").first()
    cause = top["stuck_cause"] if top else "result_unknown"
    ids = list(Order.objects.filter(merchant=merchant).order_by("id").values_list("id", flat=True)[::15_000][:8])
    references = list(Order.objects.filter(pk__in=ids).values_list("reference", flat=True))
    return cause, references


def run_lists(*, runs: int = 30, log=print) -> tuple[list[ListPage], str]:
    from django.conf import settings
    from django.test.utils import override_settings

    user, merchant, token = bench_user()
    cause, references = _list_inputs(merchant)
    pages = api_pages(cause=cause, reference=references[0])
    portal_note = ""
    if portal_available(merchant.code):
        pages += portal_pages(merchant_code=merchant.code, cause=cause, reference=references[0])
    else:
        portal_note = (f"The merchant portal's list (`{portal_url(merchant.code)}`) does not exist yet; "
                       "`bench.api_bench.portal_pages` measures it once it does.")
    hosts = [*settings.ALLOWED_HOSTS, "testserver"]
    with override_settings(DEBUG=False, ALLOWED_HOSTS=hosts):
        clients = _clients(user, token)
        log(f"lists: merchant {merchant.code} ({merchant.orders.count():,} orders), {runs} timed requests per page, "
            f"cause {cause}, reference {references[0]}")
        for page in pages:
            try:
                measure_page(page, clients[page.auth], runs=runs)
            except RuntimeError as exc:
                log(f"  {page.key:<18} FAILED: {exc}")
                page.runs_ms = []
                continue
            log(f"  {page.key:<18} p50 {page.p50:6.1f} ms  p95 {page.p95:6.1f} ms  {page.queries:>2} queries  "
                f"{page.rows:>3} rows")
    return pages, portal_note


# --- intake --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    workers: int
    threads: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the master only: it stops its workers
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gunicorn(database_url: str, token: str, *, workers: int | None = None, threads: int | None = None,
                   log=print) -> Server:
    """gunicorn with the project's config, production settings, on a free local port."""
    import httpx

    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "API_WRITE_RATE": BENCH_WRITE_RATE,
        "LOG_LEVEL": "WARNING",
        "WHITENOISE_USE_FINDERS": "1",  # no collectstatic for a benchmark; the API serves no files
        "WEB_BIND": f"127.0.0.1:{port}",
    }
    env.setdefault("SECRET_KEY", "bench-only-secret-key-not-used-for-anything-real")
    if workers is not None:
        env["WEB_WORKERS"] = str(workers)
    if threads is not None:
        env["WEB_THREADS"] = str(threads)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "backoffice.wsgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {process.stderr.read()[-2000:]}")
            try:
                if client.get("/api/v1/orders/?page_size=1", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("gunicorn did not answer within 60 s")
            time.sleep(0.2)
    # What the config decided (the bench passes overrides only to compare settings).
    config = _gunicorn_config(env)
    log(f"  gunicorn: {config['workers']} workers x {config['threads']} threads ({config['worker_class']}) on {url}")
    return Server(process, url, config["workers"], config["threads"])


def _gunicorn_config(env: dict[str, str]) -> dict:
    """Evaluate gunicorn.conf.py with this environment: the numbers the server runs with."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        namespace: dict = {"__file__": str(ROOT / "gunicorn.conf.py")}
        exec(compile((ROOT / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {"workers": namespace.get("workers", 1), "threads": namespace.get("threads", 1),
            "worker_class": namespace.get("worker_class", "sync")}


def _client_loop(url: str, token: str, client_no: int, warm: int, count: int, with_keys: bool, run_id: str,
                 barrier, results) -> None:
    """One client process: `warm` requests, wait for the others, then `count` timed ones.

    The standard library's `http.client` on one keep-alive connection: the clients share the
    machine with the server, and this client costs about a quarter of the CPU per request that
    httpx does, which leaves those cycles to the server being measured."""
    import http.client

    def body(i: int) -> bytes:
        return json.dumps({
            "reference": f"{REFERENCE_PREFIX}{run_id}-{client_no}-{i}", "amount": f"{10 + i % 990}.{i % 100:02d}",
            "currency": "CNY", "customer_name": f"Bench customer {client_no}-{i}",
            "customer_email": f"bench{client_no}.{i}@example.com", "customer_phone": "+86 138 0000 0000",
            "shipping_address": "No. 1 Example Road, Shanghai",
        }).encode()

    statuses: dict[int, int] = {}
    latencies: list[float] = []
    errors: list[str] = []
    address = urlsplit(url)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)

    def post(i: int) -> tuple[int, float]:
        nonlocal connection
        extra = {"Idempotency-Key": str(uuid.uuid4())} if with_keys else {}
        started = time.perf_counter()
        try:
            connection.request("POST", "/api/v1/orders/", body=body(i), headers={**headers, **extra})
            response = connection.getresponse()
            text = response.read()
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            connection.close()
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
            return 0, (time.perf_counter() - started) * 1000
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 201 and len(errors) < 5:
            errors.append(f"{response.status}: {text[:200].decode(errors='replace')}")
        return response.status, elapsed

    for i in range(warm):
        post(-1 - i)
    barrier.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(count):
        status, elapsed = post(i)
        statuses[status] = statuses.get(status, 0) + 1
        latencies.append(elapsed)
    finished, cpu = time.perf_counter(), time.process_time() - cpu_started
    connection.close()
    results.put({"client": client_no, "started": started, "finished": finished, "cpu": cpu, "statuses": statuses,
                 "latencies": latencies, "errors": errors})


@dataclass
class IntakeRun:
    label: str
    with_keys: bool
    clients: int
    requests: int
    seconds: float = 0.0
    created: int = 0
    failures: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    workers: int = 0
    threads: int = 0
    load: str = ""
    client_cpu: float = 0.0  # CPU seconds the client processes used while timed
    shipped: bool = False  # a run with keys under the shipped gunicorn config (the target's runs)

    @property
    def client_cores(self) -> float:
        """How many cores the load generator itself kept busy, on the same machine."""
        return self.client_cpu / self.seconds if self.seconds else 0.0

    @property
    def rate(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return median(self.latencies)

    @property
    def p95(self) -> float:
        return percentile(self.latencies, 95)


def run_intake_once(server: Server, token: str, *, label: str, with_keys: bool, clients: int, per_client: int,
                    warm: int = 20, log=print) -> IntakeRun:
    ctx = multiprocessing.get_context("spawn")  # the clients carry none of this process's state
    barrier = ctx.Barrier(clients)
    results = ctx.Queue()
    run_id = uuid.uuid4().hex[:8]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    processes = [
        ctx.Process(target=_client_loop, args=(server.url, token, n, warm, per_client, with_keys, run_id, barrier,
                                                results), daemon=True)
        for n in range(clients)
    ]
    for p in processes:
        p.start()
    outcomes = [results.get(timeout=600) for _ in processes]
    for p in processes:
        p.join(timeout=30)
    result = IntakeRun(label=label, with_keys=with_keys, clients=clients, requests=clients * per_client,
                       workers=server.workers, threads=server.threads, load=load)
    result.seconds = max(o["finished"] for o in outcomes) - min(o["started"] for o in outcomes)
    result.client_cpu = sum(o["cpu"] for o in outcomes)
    for o in outcomes:
        for status, n in o["statuses"].items():
            if status == 201:
                result.created += n
            else:
                result.failures[status] = result.failures.get(status, 0) + n
        result.latencies += o["latencies"]
        result.errors += o["errors"]
    failed = sum(result.failures.values())
    log(f"  {label:<28} {result.rate:6.1f} orders/s  p50 {result.p50:5.1f} ms  p95 {result.p95:5.1f} ms  "
        f"{result.created} created, {failed} failed{' ' + str(result.failures) if failed else ''}  "
        f"(clients used {result.client_cores:.2f} cores; load {load})")
    for error in result.errors[:3]:
        log(f"    {error}")
    return result


def cleanup_intake(ds: Dataset) -> None:
    """Delete the orders (and whatever hangs off them) and idempotency keys the intake created."""
    from django.core.cache import cache
    from django.db import connection

    from bench.recheck_bench import _delete
    from orders.models import IdempotencyKey

    with connection.cursor() as cursor:
        _delete(cursor, "orders_order", "id > %s AND reference LIKE %s",
                [ds.baseline["orders_order"], REFERENCE_PREFIX + "%"])
    IdempotencyKey.objects.filter(owner__username=BENCH_USERNAME).delete()
    cache.clear()  # the throttle's counts


def run_intake(ds: Dataset, *, database_url: str, clients: int = 8, per_client: int = 250, repeats: int = 3,
               configs: list[tuple[int | None, int | None]] | None = None, log=print) -> list[IntakeRun]:
    """Intake under the shipped gunicorn config: `repeats` runs with keys (on a shared machine one
    run can be 20 % off another), then one without; and one run with keys per config in `configs`."""
    from django.core.management import call_command

    call_command("createcachetable", verbosity=0)  # the default cache without Redis (a deployment step)
    _user, _merchant, token = bench_user()
    cleanup_intake(ds)
    runs: list[IntakeRun] = []
    log(f"intake: {clients} client processes x {per_client} orders, keep-alive connections")
    for workers, threads in [(None, None), *(configs or [])]:
        server = start_gunicorn(database_url, token, workers=workers, threads=threads, log=log)
        try:
            shipped = workers is None and threads is None
            if shipped:
                for n in range(repeats):
                    run = run_intake_once(server, token, label=f"with Idempotency-Key, run {n + 1}", with_keys=True,
                                          clients=clients, per_client=per_client, log=log)
                    run.shipped = True
                    runs.append(run)
            else:
                runs.append(run_intake_once(server, token, with_keys=True, clients=clients, per_client=per_client,
                                            label=f"with Idempotency-Key ({server.workers}x{server.threads})",
                                            log=log))
            if shipped:
                runs.append(run_intake_once(server, token, label="without Idempotency-Key", with_keys=False,
                                            clients=clients, per_client=per_client, log=log))
        finally:
            server.stop()
            cleanup_intake(ds)
    return runs


def profile_create(*, requests: int = 200, log=print) -> str:
    """cProfile and the statements of POST /api/v1/orders/ in this process (test Client)."""
    import cProfile
    import io
    import pstats

    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, override_settings

    call_command("createcachetable", verbosity=0)
    _user, _merchant, token = bench_user()
    client = Client(HTTP_AUTHORIZATION=f"Token {token}")

    def post(i: int):
        body = {"reference": f"{REFERENCE_PREFIX}prof-{uuid.uuid4().hex[:10]}", "amount": "128.00",
                "currency": "CNY", "customer_name": "Li Wei", "customer_email": "li.wei@example.com"}
        return client.post("/api/v1/orders/", json.dumps(body), content_type="application/json",
                           HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))

    with override_settings(DEBUG=False, ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"],
                           API_WRITE_RATE=BENCH_WRITE_RATE):
        for i in range(20):
            post(i)
        with CaptureQueriesContext(connection) as captured:
            post(0)
        started = time.perf_counter()
        for i in range(requests):
            post(i)
        per_request = (time.perf_counter() - started) * 1000 / requests
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(requests):
            post(i)
        profiler.disable()
    out = io.StringIO()
    out.write(f"POST /api/v1/orders/ in one process: {per_request:.2f} ms a request, {len(captured)} statements:\n")
    for q in captured.captured_queries:
        out.write(f"  {q['sql'][:140]}\n")
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
    text = out.getvalue()
    log(text)
    return text


# --- the report ----------------------------------------------------------------------------------


def run(ds: Dataset, *, database_url: str, list_runs: int = 30, clients: int = 8, per_client: int = 250,
        intake_runs: int = 3, compare_configs: bool = False, profile: bool = False, log=print) -> Result:
    pages, portal_note = run_lists(runs=list_runs, log=log)
    cores = os.cpu_count() or 1
    # Sync workers (one per core, and one more), and fewer and more threads than shipped.
    configs = [(cores, 1), (cores + 1, 1), (cores, 2), (cores, 8)] if compare_configs else []
    intake = run_intake(ds, database_url=database_url, clients=clients, per_client=per_client, repeats=intake_runs,
                        configs=configs, log=log)
    profile_text = profile_create(log=log) if profile else ""
    if profile:
        cleanup_intake(ds)
    keyed = [r for r in intake if r.shipped]
    main = keyed[0]
    no_keys = next(r for r in intake if not r.with_keys)
    rate = median([r.rate for r in keyed])  # the target's figure: the median run
    failures = sum(sum(r.failures.values()) for r in intake)
    lists_ok = all(p.ok for p in pages if p.runs_ms) and all(p.runs_ms for p in pages)
    intake_ok = rate >= INTAKE_TARGET_PER_S and not any(r.failures for r in keyed)
    ok = lists_ok and intake_ok

    worst = max((p for p in pages if p.runs_ms), key=lambda p: p.p95)
    headline = [
        f"order list, 50 rows: worst p95 {worst.p95:.1f} ms ({worst.key}), target <= {LIST_TARGET_P95_MS:.0f} ms  "
        f"[{'ok' if lists_ok else 'MISSED'}]",
        f"intake with Idempotency-Key, {clients} clients: median {rate:.0f} orders/s of {len(keyed)} runs "
        f"({', '.join(f'{r.rate:.0f}' for r in keyed)}), target >= {INTAKE_TARGET_PER_S:.0f}/s  "
        f"[{'ok' if intake_ok else 'MISSED'}]; without keys {no_keys.rate:.0f}/s; {failures} failed requests",
    ]

    from orders.models import Order

    cache = "Redis as the cache (`REDIS_URL`)" if os.environ.get("REDIS_URL") else "the database cache (no Redis)"
    merchant_orders = Order.objects.filter(merchant__code=BIG_MERCHANT).count()
    lines = [
        "### Order list of one merchant",
        "",
        f"What is measured: server time of `GET /api/v1/orders/?page_size=50` as an operator of `{BIG_MERCHANT}` "
        f"({merchant_orders:,} of the dataset's {ds.orders:,} orders), token auth, through Django's test Client in "
        f"the benchmark process (production settings, warm: 5 requests first), p50 and p95 of {list_runs} requests "
        "per page.",
        "",
        "Data: the dataset of the other benchmarks (`bench/dataset.py`); its merchant `bench-01` has 12 % of the "
        "orders, the other 19 about 46,000 each.",
        "",
        "| page | p50 | p95 | target (p95) | queries | rows |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for p in pages:
        if not p.runs_ms:
            lines.append(f"| {p.label} | | | failed | | |")
            continue
        mark = "met" if p.ok else "**missed**"
        lines.append(f"| {p.label} | {p.p50:.1f} ms | {p.p95:.1f} ms | <= {p.target_ms:.0f} ms ({mark}) | "
                     f"{p.queries} | {p.rows} |")
    if portal_note:
        lines += ["", portal_note]
    lines += [
        "",
        "### Order intake through gunicorn",
        "",
        f"What is measured: gunicorn with the shipped `gunicorn.conf.py` ({main.workers} workers x {main.threads} "
        f"threads), production settings (`DEBUG` off, {cache}, `API_WRITE_RATE={BENCH_WRITE_RATE}` so "
        f"the throttle counts but never refuses), against the benchmark database on the same 2 cores as "
        f"{clients} client processes (the standard library's `http.client`, one keep-alive connection each) "
        "POSTing `/api/v1/orders/` one after another with a token, a unique reference and a unique "
        f"`Idempotency-Key`, {per_client} orders each after "
        f"20 warm ones, {len(keyed)} times in a row; the target applies to the median run. Orders/s counts `201` "
        "answers only; any other answer is a failure. Latency is the client's.",
        "",
        "| run | orders/s | p50 | p95 | created | failed | target | result | cores the clients used | load average at start |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |",
    ]
    for r in intake:
        failed = sum(r.failures.values())
        failed_text = f"{failed} ({', '.join(f'{s}: {n}' for s, n in sorted(r.failures.items()))})" if failed else "0"
        target = f">= {INTAKE_TARGET_PER_S:.0f}/s (median)" if r is main else ""
        result = (f"median {rate:.0f}/s: " + ("met" if intake_ok else "**missed**")) if r is main else ""
        lines.append(f"| {r.label} | {r.rate:.0f} | {r.p50:.1f} ms | {r.p95:.1f} ms | {r.created:,} | {failed_text} | "
                     f"{target} | {result} | {r.client_cores:.2f} | {r.load} |")
    lines += [
        "",
        "Command: `make bench` or `.venv/bin/python bench/run.py --only api` (`--api-clients`, `--api-orders` "
        "per client, `--api-configs` to compare gunicorn settings, `--profile` for the create path's profile).",
    ]
    if profile_text:
        lines += ["", "Profile of the create path (one process, test Client):", "", "```",
                  *profile_text.splitlines()[:60], "```"]
    return Result(key="api", title="API: one merchant's order list, and order intake", ok=ok,
                  headline=headline, markdown="\n".join(lines),
                  extra={"pages": pages, "intake": intake})
