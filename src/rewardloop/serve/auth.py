"""Who is calling: API keys with roles (``store.keys.ApiKeys``), checked per route.

With ``serve.auth: true`` every route but ``/health`` needs a key — ``Authorization: Bearer <key>`` (what the
``openai`` client sends as ``api_key``) or, for the annotation pages, the ``rl_key`` cookie set by ``/annotate/login``.
Roles are ranked: ``client`` < ``annotator`` < ``admin``; a route names the lowest role it admits. A missing or
unknown key gets 401, a key of a lower role 403, and neither touches the store. With ``serve.auth: false`` (the
default, for a server on loopback) every caller is an anonymous admin, and ``rewardloop serve`` refuses to bind a
non-loopback address that way.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer

from rewardloop.store.keys import ApiKeys
from rewardloop.store.models import ROLES

BEARER = HTTPBearer(auto_error=False, description="an API key from `rewardloop keys create` (serve.auth: true)")
KEY_COOKIE = "rl_key"
NAME_COOKIE = "rl_annotator"  # without auth: the name an annotator typed at /annotate/login


@dataclass(frozen=True)
class Caller:
    name: str | None  # the key's holder; without auth, the annotator's typed name (or None)
    role: str


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Auth:
    """``auth.require(request, "annotator")`` → the Caller, or an HTTPException (401 / 403)."""

    def __init__(self, keys: ApiKeys, enabled: bool) -> None:
        self.keys, self.enabled = keys, enabled

    def caller(self, request: Request) -> Caller | None:
        if not self.enabled:
            return Caller(request.cookies.get(NAME_COOKIE) or None, "admin")
        who = self.keys.authenticate(bearer(request) or request.cookies.get(KEY_COOKIE))
        return Caller(who["name"], who["role"]) if who else None

    def require(self, request: Request, role: str) -> Caller:
        caller = self.caller(request)
        if caller is None:
            raise HTTPException(
                401,
                {"error": {"message": "a valid API key is required", "type": "authentication_error", "param": None}},
                headers={"WWW-Authenticate": "Bearer"},
            )
        if ROLES.index(caller.role) < ROLES.index(role):
            message = f"this needs the {role!r} role; your key has {caller.role!r}"
            raise HTTPException(403, {"error": {"message": message, "type": "permission_error", "param": None}})
        return caller

    def needs(self, role: str):
        """A route dependency admitting ``role`` and above. Dependencies run before the body is validated, so an
        unauthenticated request gets 401 whatever its body; ``BEARER`` puts the scheme into the OpenAPI schema."""

        def dependency(request: Request, _credentials=Depends(BEARER)) -> Caller:
            return self.require(request, role)

        return Depends(dependency)
