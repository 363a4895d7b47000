"""Token authentication (DRF's tokens, `manage.py drf_create_token`) with its lookup compiled once.

DRF's `TokenAuthentication` reads the token with its user through the ORM, which compiles that
query again for every request; here it is the same read, compiled once (`PreparedQuery`). The
answers are DRF's: the same messages (translated by DRF's catalogues), 401 for an unknown token
or an inactive user, and `request.auth` is the token."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from orders.statements import PreparedQuery

_users_by_token = PreparedQuery(
    get_user_model(), lambda key: get_user_model().objects.filter(auth_token__key=key), key="\x00token stand-in"
)


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str):
        users = _users_by_token(key=key)
        if not users:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user = users[0]
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, Token(key=key, user=user)
