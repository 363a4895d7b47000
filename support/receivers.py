"""Tickets follow their orders: receivers of `orders.signals.order_state_changed`, the
ticket messages on the order timeline, and the support schedules."""
