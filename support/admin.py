from support import outbox_admin  # noqa: F401
