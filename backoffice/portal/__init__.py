"""The merchant portal at /merchant/: a merchant's own orders, their diagnosis, tickets, an
export and the merchant's memberships, for the merchant's staff (viewer, operator, manager)."""
