"""Command line: ``collab serve``, ``token``, ``check``, ``webhooks status``, the history
commands (``history``, ``show``, ``replay``, ``export``, ``import``, ``name``:
collab.history_commands), and ``write`` (collab.write_command)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from collab import __version__, garbage, history_commands, logs, memory, workers, write_command
from collab.auth import Authenticator, Role
from collab.config import Settings, SettingsError, add_arguments, settings_from_namespace
from collab.errors import StoreError
from collab.extensions import load_extension

log = logging.getLogger("collab")

SHUTDOWN_MARGIN_S = 5.0
HISTORY_COMMANDS = ("history", "show", "replay", "export", "import", "name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collab", description="Collaborative-editing server")
    parser.add_argument("--version", action="version", version=f"collab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    add_arguments(serve)
    serve.add_argument(
        "--extension",
        action="append",
        default=[],
        metavar="MODULE:ATTRIBUTE",
        help="an extension's hooks (collab.extensions), imported from the module; "
        "repeatable: they chain in the order given",
    )
    token = commands.add_parser("token", help="print an access token signed with the auth secret")
    token.add_argument("--user", required=True, help="the token's subject")
    token.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="PATTERN=ROLE",
        help="document pattern and role (read or write); repeatable",
    )
    token.add_argument(
        "--admin",
        action="store_true",
        help="allow the admin routes (POST /api/admin/revoke); grants no document by itself",
    )
    token.add_argument("--name", default=None, help="display name on presence (default: user)")
    token.add_argument("--color", default=None, help="presence colour, e.g. '#e91e63'")
    token.add_argument("--expires-in-s", type=float, default=None, help="lifetime in seconds")
    token.add_argument("--auth-secret", default=None, help="(env COLLAB_AUTH_SECRET)")
    check = commands.add_parser(
        "check",
        help="read every document of a store and report entries that cannot be read",
        description="Replay every document's log and snapshots with the strict reader. "
        "Exit status 1 when something cannot be read (and --repair was not given).",
    )
    check.add_argument("--store-url", default=None, help="(env COLLAB_STORE_URL)")
    check.add_argument(
        "--repair",
        action="store_true",
        help="set unreadable entries aside (in the quarantine table) and give the "
        "document a new epoch; stop the servers first",
    )
    check.add_argument("--doc", action="append", default=None, help="only this document")
    check.add_argument("--quiet", action="store_true", help="print only problems")
    webhooks = commands.add_parser(
        "webhooks",
        help="webhooks: `collab webhooks status` shows how each one's deliveries go",
    )
    webhook_commands = webhooks.add_subparsers(dest="webhooks_command", required=True)
    status = webhook_commands.add_parser(
        "status",
        help="each webhook's deliveries, failures and lease, as the store has them",
        description="Exit status 1 when a webhook's latest delivery failed.",
    )
    status.add_argument("--store-url", default=None, help="(env COLLAB_STORE_URL)")
    status.add_argument("--json", action="store_true", help="one JSON object per webhook")
    history_commands.add_commands(commands)
    write_command.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "token":
            return print_token(args)
        if args.command in HISTORY_COMMANDS:
            return history_commands.run(args)
        if args.command == "webhooks":
            store_url = args.store_url or Settings.from_env().store_url
            try:
                return asyncio.run(webhooks_status(store_url, as_json=args.json))
            except StoreError as exc:
                print(f"collab webhooks: {exc}", file=sys.stderr)
                return 1
        if args.command == "write":
            return write_command.run(args)
        if args.command == "check":
            store_url = args.store_url or Settings.from_env().store_url
            try:
                return asyncio.run(run_check(store_url, args))
            except StoreError as exc:
                print(f"collab check: {exc}", file=sys.stderr)
                return 1
        settings = settings_from_namespace(args)
        extensions = [load_extension(spec) for spec in args.extension]
    except (SettingsError, ImportError, ValueError) as exc:
        print(f"collab: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    index = workers.worker_index()
    if settings.workers > 1 and index is None:
        return workers.supervise(settings, argv)
    if index is not None:
        settings = workers.as_worker(settings, index)
    try:
        loop_factory = event_loop_factory(settings.event_loop)
    except ImportError:
        print(
            "collab: event_loop uvloop needs the uvloop package: pip install 'collab[uvloop]'",
            file=sys.stderr,
        )
        return 2
    # Before any thread starts: arenas are made as threads first allocate.
    memory.limit_arenas(settings.malloc_arena_max)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(settings, extensions))
    except (OSError, ValueError) as exc:
        log.error("could not start: %s", exc)
        return 1
    return 0


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """None: asyncio's default loop. uvloop is an optional dependency."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


async def serve(settings: Settings, extensions: Sequence[object] = ()) -> None:
    from collab.app import CollabServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = CollabServer(settings, extensions=extensions)
    await server.start()
    long_lived = garbage.LongLivedObjects(settings.gc_rescan_s)
    rescans = None
    if settings.gc_rescan_s > 0:
        long_lived.install()
        rescans = asyncio.create_task(long_lived.run(), name="garbage collector rescans")
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        if rescans is not None:
            rescans.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rescans
        long_lived.uninstall()
        # Flushing is bounded by shutdown_flush_timeout_s; the rest takes moments.
        bound = settings.shutdown_flush_timeout_s + SHUTDOWN_MARGIN_S
        try:
            await asyncio.wait_for(server.stop(), bound)
        except TimeoutError:
            log.error("shutdown took longer than %.0fs; exiting", bound)


def print_token(args: argparse.Namespace) -> int:
    secret = args.auth_secret or Settings.from_env().auth_secret
    if not secret:
        raise SettingsError("set --auth-secret or COLLAB_AUTH_SECRET to sign tokens")
    if not args.grant and not args.admin:
        raise SettingsError("give at least one --grant PATTERN=ROLE, or --admin")
    grants: dict[str, str] = {}
    for grant in args.grant:
        pattern, _, role = grant.rpartition("=")
        if not pattern or role not in (Role.READ, Role.WRITE):
            raise SettingsError(f"--grant {grant!r}: expected PATTERN=read or PATTERN=write")
        grants[pattern] = role
    token = Authenticator(secret).issue(
        args.user,
        grants,
        expires_in_s=args.expires_in_s,
        name=args.name,
        color=args.color,
        admin=args.admin,
    )
    print(token)
    return 0


async def run_check(store_url: str, args: argparse.Namespace) -> int:
    from collab.core.check import DocumentReport, check_store
    from collab.store import create_store

    store = create_store(store_url, create=False)
    await store.open()

    def show(report: DocumentReport) -> None:
        if report.ok:
            if not args.quiet:
                print(
                    f"ok      {report.doc} ({report.updates} updates, {report.snapshots} snapshots)"
                )
            return
        print(f"BROKEN  {report.doc} ({report.updates} updates, {report.snapshots} snapshots)")
        for problem in report.problems:
            print(f"        {problem.kind} {problem.seq}: {problem.reason}")
        if report.repaired_epoch is not None:
            print(f"        repaired: set aside, new epoch {report.repaired_epoch}")

    try:
        reports = await check_store(store, repair=args.repair, docs=args.doc, progress=show)
    finally:
        await store.close()
    broken = [r for r in reports if not r.ok]
    entries = sum(len(r.problems) for r in broken)
    action = "set aside" if args.repair else "found"
    print(f"checked {len(reports)} documents: {len(broken)} broken, {entries} entries {action}")
    return 1 if broken and not args.repair else 0


async def webhooks_status(store_url: str, *, as_json: bool) -> int:
    """Print each webhook's state; 1 when one is failing. Reads the store, never
    makes one."""
    import json
    import time

    from collab.store import create_store

    store = create_store(store_url, create=False)
    await store.open()
    try:
        states = await store.webhook_states()
    finally:
        await store.close()
    now = time.time()
    for state in states:
        held = state.lease_instance is not None and state.lease_until_s > now
        if as_json:
            print(
                json.dumps(
                    {
                        "webhook": state.name,
                        "failing": state.failures > 0,
                        "delivered": state.delivered,
                        "failures": state.failures,
                        "last_error": state.last_error,
                        "last_attempt_s": state.last_attempt_s,
                        "last_success_s": state.last_success_s,
                        "delivering_instance": state.lease_instance if held else None,
                    }
                )
            )
            continue
        health = (
            f"FAILING ({state.failures} attempts: {state.last_error})" if state.failures else "ok"
        )
        since = (
            f"{now - state.last_success_s:.0f}s ago"
            if state.last_success_s is not None
            else "never"
        )
        who = f"instance {state.lease_instance}" if held else "no instance (none running)"
        print(f"{state.name}\n  {health}; {state.delivered} delivered, last {since}; by {who}")
    if not states and not as_json:
        print("no webhooks in this store")
    return 1 if any(state.failures for state in states) else 0
