"""Who did something: every service call names its actor, and every event records it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


@dataclass(frozen=True)
class Actor:
    kind: str  # one of OrderEvent.ActorKind
    user: "AbstractBaseUser | None" = None
    label: str = ""  # a provider name, or the customer's email

    @classmethod
    def system(cls, label: str = "") -> "Actor":
        return cls("system", None, label)

    @classmethod
    def staff(cls, user: "AbstractBaseUser") -> "Actor":
        return cls("staff", user)

    @classmethod
    def merchant(cls, user: "AbstractBaseUser") -> "Actor":
        return cls("merchant", user)

    @classmethod
    def customer(cls, email: str = "") -> "Actor":
        return cls("customer", None, email)

    @classmethod
    def provider(cls, name: str) -> "Actor":
        return cls("provider", None, name)

    @property
    def user_id(self) -> int | None:
        return getattr(self.user, "pk", None)
