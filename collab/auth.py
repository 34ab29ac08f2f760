"""Access tokens and grants.

With no ``auth_secret`` the server is open: every peer may read and write every
document. With a secret, every connection presents a JWT signed with it (HS256):

    {"sub": "alice", "docs": {"notes/*": "write", "handbook": "read"}, "exp": ...}

``docs`` maps document-name patterns (``fnmatch`` syntax; ``*`` also matches
``/``) to a role; when several patterns match, the strongest role wins. A name
that matches no pattern is forbidden.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

import jwt

from collab.errors import AccessDenied, CloseCode, ErrorCode

ALGORITHM = "HS256"


class Role(StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Identity:
    user: str | None
    grants: tuple[tuple[str, Role], ...]

    def role_for(self, doc: str) -> Role | None:
        roles = {role for pattern, role in self.grants if fnmatchcase(doc, pattern)}
        if Role.WRITE in roles:
            return Role.WRITE
        return Role.READ if roles else None

    def require(self, doc: str) -> Role:
        role = self.role_for(doc)
        if role is None:
            raise AccessDenied(
                f"access to document {doc!r} is not granted",
                code=ErrorCode.FORBIDDEN,
                doc=doc,
            )
        return role


OPEN_ACCESS = Identity(user=None, grants=(("*", Role.WRITE),))


class Authenticator:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    @property
    def enabled(self) -> bool:
        return bool(self._secret)

    def authenticate(self, token: str | None) -> Identity:
        """The identity a token proves; raises AccessDenied (close 4401)."""
        if not self.enabled:
            return OPEN_ACCESS
        if not token:
            raise _unauthorized("an access token is required")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": ["sub"]}
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the access token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise _unauthorized(f"the access token is invalid: {exc}") from None
        docs = claims.get("docs")
        if not isinstance(docs, dict) or not all(
            isinstance(k, str) and v in (Role.READ, Role.WRITE) for k, v in docs.items()
        ):
            raise _unauthorized("the access token's 'docs' claim must map patterns to read/write")
        return Identity(
            user=str(claims["sub"]),
            grants=tuple((pattern, Role(role)) for pattern, role in docs.items()),
        )

    def issue(self, user: str, docs: dict[str, str], *, expires_in_s: float | None = None) -> str:
        """Sign a token (for tests, scripts and the ``collab token`` command)."""
        claims: dict[str, object] = {"sub": user, "docs": docs}
        if expires_in_s is not None:
            claims["exp"] = int(time.time() + expires_in_s)
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)


def _unauthorized(message: str) -> AccessDenied:
    return AccessDenied(message, code=ErrorCode.UNAUTHORIZED, close_code=CloseCode.UNAUTHORIZED)
