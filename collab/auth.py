"""Access tokens, grants and revocation.

With no key configured the server is open: every peer may read and write every
document, as an anonymous user. Otherwise every connection presents a JWT, signed
with the HS256 secret (``auth_secret``), or by an identity provider's key: an RSA
or EC P-256 public key (``auth_public_key_file``; RS256, ES256) or a JSON Web Key
Set (``auth_jwks_file``; the token's ``kid`` names its key):

    {"sub": "alice", "name": "Alice", "color": "#e91e63",
     "docs": {"notes/*": "write", "handbook": "read"}, "exp": 1767225600}

``docs`` maps document-name patterns (``fnmatch`` syntax; ``*`` also matches
``/``) to a role; when several patterns match, the strongest role wins. A name
that matches no pattern is forbidden. ``name`` (default: ``sub``) and ``color``
are what the server stamps on the user's presence. ``exp`` is enforced for as
long as a connection lasts. ``"admin": true`` allows the admin routes.

Revoking a user (``POST /api/admin/revoke``) refuses every token of theirs issued
(``iat``) at or before that moment, and ends their open connections.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import jwt

from collab.config import Settings
from collab.errors import AccessDenied, CloseCode, ErrorCode

HS256 = "HS256"
ASYMMETRIC = ("RS256", "ES256")
MAX_NAME_CHARS = 128  # of the display name stamped on presence
MAX_COLOR_CHARS = 32
LEEWAY_S = 0.0
# The last second of the year 9999: no issuer signs a time past it, and every
# time before it is a number msgpack, JSON and the event loop's timers carry.
MAX_CLAIM_TIME_S = 253_402_300_799
TIME_CLAIMS = ("exp", "iat", "nbf")


class Role(StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Identity:
    user: str | None
    grants: tuple[tuple[str, Role], ...]
    name: str | None = None  # display name (default: the user id)
    color: str | None = None
    expires_s: float | None = None  # wall-clock seconds (the token's exp)
    issued_s: float | None = None  # the token's iat
    admin: bool = False

    def role_for(self, doc: str) -> Role | None:
        roles = {role for pattern, role in self.grants if fnmatchcase(doc, pattern)}
        if Role.WRITE in roles:
            return Role.WRITE
        return Role.READ if roles else None

    def name_prefixes(self, within: str = "") -> list[str]:
        """The fewest prefixes, in name order, that every granted name starting
        with ``within`` starts with (none: nothing there is granted), for listing
        by the store's index instead of testing every name. No prefix is a
        prefix of another, so their ranges of names follow each other in order."""
        found = set()
        for pattern, _ in self.grants:
            literal = literal_prefix(pattern)
            if literal.startswith(within):
                found.add(literal)
            elif within.startswith(literal):
                found.add(within)
        prefixes: list[str] = []
        for prefix in sorted(found):  # a prefix sorts before every name that extends it
            if not prefixes or not prefix.startswith(prefixes[-1]):
                prefixes.append(prefix)
        return prefixes

    def require(self, doc: str) -> Role:
        role = self.role_for(doc)
        if role is None:
            raise AccessDenied(
                f"access to document {doc!r} is not granted",
                code=ErrorCode.FORBIDDEN,
                doc=doc,
            )
        return role

    def expired(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.expires_s is not None and now >= self.expires_s


def literal_prefix(pattern: str) -> str:
    """What every name an ``fnmatch`` pattern matches starts with: the pattern up
    to its first wildcard (``*``, ``?``, ``[``)."""
    for index, char in enumerate(pattern):
        if char in "*?[":
            return pattern[:index]
    return pattern


OPEN_ACCESS = Identity(user=None, grants=(("*", Role.WRITE),))
Revoked = Callable[[Identity], None]


class Authenticator:
    def __init__(self, secret: str = "", *, public_key_file: str = "", jwks_file: str = "") -> None:
        self._secret = secret
        self._keys: dict[str | None, tuple[Any, str]] = {}  # kid -> (key, algorithm)
        if public_key_file:
            key = jwt.PyJWK.from_dict(_jwk_of_pem(Path(public_key_file).read_bytes()))
            self._keys[None] = (key.key, _algorithm_of(key))
        if jwks_file:
            for key in jwt.PyJWKSet.from_dict(json.loads(Path(jwks_file).read_text())).keys:
                self._keys[key.key_id] = (key.key, _algorithm_of(key))
        self._revoked: dict[str, float] = {}  # user -> tokens issued at or before are refused
        self._listeners: list[Revoked] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The authenticator the settings configure (auth_secret, or a public key
        file, or a JWKS file; none: open access)."""
        return cls(
            settings.auth_secret,
            public_key_file=settings.auth_public_key_file,
            jwks_file=settings.auth_jwks_file,
        )

    @property
    def enabled(self) -> bool:
        return bool(self._secret) or bool(self._keys)

    def authenticate(self, token: str | None) -> Identity:
        """The identity a token proves; raises AccessDenied (close 4401) when it is
        missing, invalid, signed with another key, expired, or revoked."""
        if not self.enabled:
            return OPEN_ACCESS
        if not token:
            raise _unauthorized("an access token is required")
        try:
            key, algorithm = self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options={"require": ["sub"]},
                leeway=LEEWAY_S,
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the access token has expired") from None
        except (jwt.PyJWTError, ValueError) as exc:  # ValueError: a key of the wrong kind
            raise _unauthorized(f"the access token is invalid: {exc}") from None
        identity = _identity_of(claims)
        if self.is_revoked(identity):
            raise _unauthorized("the access token was revoked")
        return identity

    def _key_for(self, token: str) -> tuple[Any, str]:
        if self._secret:
            return self._secret, HS256
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        entry = self._keys.get(kid) or (self._keys.get(None) if kid is None else None)
        if entry is None and len(self._keys) == 1 and kid is None:
            entry = next(iter(self._keys.values()))
        if entry is None:
            raise jwt.InvalidKeyError(f"no key named {kid!r} signs tokens here")
        return entry

    # -- revocation -------------------------------------------------------------------

    def revoke(self, user: str, now: float | None = None) -> None:
        """Refuse every token of ``user`` issued until now; tell the listeners (the
        server ends the user's connections)."""
        self._revoked[user] = time.time() if now is None else now
        for listener in list(self._listeners):
            listener(Identity(user=user, grants=()))

    def is_revoked(self, identity: Identity) -> bool:
        if identity.user is None or identity.user not in self._revoked:
            return False
        # A token without iat cannot show it came after the revocation.
        return identity.issued_s is None or identity.issued_s <= self._revoked[identity.user]

    def on_revoke(self, listener: Revoked) -> None:
        self._listeners.append(listener)

    # -- issuing ------------------------------------------------------------------------

    def issue(
        self,
        user: str,
        docs: dict[str, str],
        *,
        expires_in_s: float | None = None,
        name: str | None = None,
        color: str | None = None,
        admin: bool = False,
    ) -> str:
        """Sign an HS256 token (for tests, scripts and the ``collab token`` command)."""
        if not self._secret:
            raise ValueError("only a server with auth_secret signs tokens")
        now = time.time()
        claims: dict[str, object] = {"sub": user, "docs": docs, "iat": now}
        if expires_in_s is not None:
            claims["exp"] = now + expires_in_s
        if name is not None:
            claims["name"] = name
        if color is not None:
            claims["color"] = color
        if admin:
            claims["admin"] = True
        return jwt.encode(claims, self._secret, algorithm=HS256)


def _identity_of(claims: dict[str, Any]) -> Identity:
    docs = claims.get("docs")
    if not isinstance(docs, dict) or not all(
        isinstance(k, str) and v in (Role.READ, Role.WRITE) for k, v in docs.items()
    ):
        raise _unauthorized("the access token's 'docs' claim must map patterns to read/write")
    name = claims.get("name")
    color = claims.get("color")
    if name is not None and not isinstance(name, str):
        raise _unauthorized("the access token's 'name' claim must be a string")
    if color is not None and not isinstance(color, str):
        raise _unauthorized("the access token's 'color' claim must be a string")
    for claim in TIME_CLAIMS:
        _check_time(claim, claims.get(claim))
    exp, iat = claims.get("exp"), claims.get("iat")
    return Identity(
        user=str(claims["sub"]),
        grants=tuple((pattern, Role(role)) for pattern, role in docs.items()),
        name=(name or str(claims["sub"]))[:MAX_NAME_CHARS],
        color=color[:MAX_COLOR_CHARS] if color else None,
        expires_s=float(exp) if isinstance(exp, int | float) else None,
        issued_s=float(iat) if isinstance(iat, int | float) else None,
        admin=claims.get("admin") is True,
    )


def _check_time(claim: str, value: Any) -> None:
    """A time claim, if present, is a number of seconds between 1970 and the end
    of 9999. PyJWT also takes a numeric string (a session must know when it
    ends), and any finite number: an ``exp`` of 1e300 would pass its check and
    then be a time no timer or encoder holds."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _unauthorized(f"the access token's '{claim}' claim must be a number")
    # Compared as they are: float() of a 400-digit integer would overflow.
    if not (0 <= value <= MAX_CLAIM_TIME_S):  # NaN fails both comparisons
        raise _unauthorized(
            f"the access token's '{claim}' claim must be a time between 1970 and the year 9999"
        )


def _jwk_of_pem(pem: bytes) -> dict[str, Any]:
    """A public key in PEM as a JWK (PyJWT picks the algorithm from it)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem)
    if isinstance(key, rsa.RSAPublicKey):
        return json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    raise ValueError("the public key must be RSA (RS256) or EC P-256 (ES256)")


def _algorithm_of(key: jwt.PyJWK) -> str:
    algorithm = key.algorithm_name
    if algorithm not in ASYMMETRIC:
        raise ValueError(f"signing keys must be RS256 or ES256, not {algorithm}")
    return algorithm


def _unauthorized(message: str) -> AccessDenied:
    return AccessDenied(message, code=ErrorCode.UNAUTHORIZED, close_code=CloseCode.UNAUTHORIZED)
