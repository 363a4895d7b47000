from support import outbox_admin, ticket_admin  # noqa: F401
