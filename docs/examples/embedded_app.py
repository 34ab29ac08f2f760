"""A small Tornado application with its own login that embeds collab.

The application keeps its users and their sessions (a signed ``user`` cookie);
collab's handlers are mounted under ``/collab`` and ask the application who a
connection is through an extension's ``on_authenticate`` hook, which reads the
same cookie and hands collab an identity with per-document grants. Nothing in
collab knows about the application's users, and no token is minted.

    python docs/examples/embedded_app.py --port 8080 --store sqlite:///data/app.db

Then log in (``POST /login`` with ``user=ann``) and open ``ws://host:8080/collab/ws``
with the cookie the login set: ann writes ``notes/*``, bob only reads them,
anyone not logged in is refused (4401).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal

import tornado.httpserver
import tornado.netutil
import tornado.web

from collab.auth import Identity, Role
from collab.config import Settings
from collab.embed import Collab
from collab.extensions import Extension, Refuse, Request

# The application's own users, and what each may do in collab.
USERS = {
    "ann": {"notes/*": Role.WRITE},
    "bob": {"notes/*": Role.READ},
}
SESSION_COOKIE = "user"
SESSION_DAYS = 1


class AppLogin(Extension):
    """collab's connections authenticated by the application's session cookie."""

    def __init__(self, cookie_secret: str) -> None:
        self.cookie_secret = cookie_secret

    async def on_authenticate(self, request: Request) -> Identity | None:
        signed = request.cookies.get(SESSION_COOKIE)
        user = None
        if signed:
            value = tornado.web.decode_signed_value(
                self.cookie_secret, SESSION_COOKIE, signed, max_age_days=SESSION_DAYS
            )
            user = value.decode() if value else None
        if user not in USERS:
            raise Refuse("log in first (POST /login)")
        return Identity(user=user, grants=tuple(USERS[user].items()), name=user.title())


class LoginHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        user = self.get_body_argument("user", "")
        if user not in USERS:
            raise tornado.web.HTTPError(403, "no such user")
        self.set_signed_cookie(SESSION_COOKIE, user, expires_days=SESSION_DAYS, httponly=True)
        self.write({"user": user})


class LogoutHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        self.clear_cookie(SESSION_COOKIE)
        self.write({"user": None})


def make_app(collab: Collab, cookie_secret: str) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/login", LoginHandler),
            (r"/logout", LogoutHandler),
            *collab.handlers(),  # /collab/ws, /collab/yjs/{doc}, /collab/api/...
        ],
        cookie_secret=cookie_secret,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free one")
    parser.add_argument("--store", default="sqlite:///data/app.db", help="collab's store")
    args = parser.parse_args()

    cookie_secret = secrets.token_hex(32)  # a real application keeps its own
    collab = Collab(
        Settings(store_url=args.store),
        prefix="/collab",
        extensions=[AppLogin(cookie_secret)],
    )
    app = make_app(collab, cookie_secret)
    await collab.start()  # the store opens with the application...
    sockets = tornado.netutil.bind_sockets(args.port, "127.0.0.1")
    http = tornado.httpserver.HTTPServer(app)
    http.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    http.stop()
    await collab.stop()  # ...and closes with it, after storing what was accepted


if __name__ == "__main__":
    asyncio.run(main())
