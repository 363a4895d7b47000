"""The one signal `orders` sends to the rest of the project.

`order_state_changed` is sent after the transaction commits, whenever an order's status
changes or its unreturned flag is raised or cleared. Receivers get keyword arguments:

- ``order_id``: the order's primary key;
- ``old_status`` / ``new_status``: equal when only the flag changed;
- ``was_unreturned`` / ``is_unreturned``: the flag before and after;
- ``cause``: the unreturned cause after the change ("" when not unreturned);
- ``actor_kind``: who caused the change (see ``OrderEvent.ActorKind``).

Receivers must not assume they run inside the transaction that made the change; they
should take ids and enqueue work rather than do it inline.
"""

from django.dispatch import Signal

order_state_changed = Signal()
