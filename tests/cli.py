"""The ``collab`` command in tests: as a user runs it (``python -m collab``, a process of
its own) or in-process, through the same entry (collab.cli.main).

A process costs a third of a second of CPU to import collab before the command does
anything; tests that check what a command prints and its exit status run it in-process,
and each family of commands keeps tests that run the real ``python -m collab`` (and
those that check how it reads its environment or working directory, which belong to
the process). The README's walk-through runs its first command as a process and the
others in-process, with the environment and folder the test sets for them.

In-process, the command runs in a worker thread (it runs its own event loop with
``asyncio.run``, and the test's loop, serving the test's server, keeps running), with
``sys.stdout`` and ``sys.stderr`` redirected for the call: one command at a time in a
test process, and nothing else in the test process prints meanwhile (servers log).
What the command logs at WARNING and above from its thread goes to its stderr as well,
as Python's last-resort handler writes it in the process, where nothing configured
logging (and the test fails on its errors, as on a server's: tests/conftest.py).
``serve`` stays a process (tests/processes.py): it configures logging, signals and
malloc for the whole process.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
import threading
from pathlib import Path

from collab.cli import main

TIMEOUT_S = 60.0

_one_at_a_time = threading.Lock()  # sys.stdout and sys.stderr are the process's


async def collab_process(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    merge_stderr: bool = False,
    timeout_s: float = TIMEOUT_S,
) -> tuple[int, str, str]:
    """``python -m collab ARGS`` in a process: exit status, stdout, stderr (empty
    with ``merge_stderr``: then stdout has both)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collab",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, out.decode(), (err or b"").decode()


async def collab_in_process(
    *args: str, merge_stderr: bool = False, timeout_s: float = TIMEOUT_S
) -> tuple[int, str, str]:
    """``collab ARGS`` run by collab.cli.main in a worker thread: exit status, stdout,
    stderr (empty with ``merge_stderr``: then stdout has both)."""
    assert "serve" not in args[:1], "collab serve runs as a process: tests/processes.py"
    return await asyncio.wait_for(asyncio.to_thread(_run, list(args), merge_stderr), timeout_s)


def _run(argv: list[str], merge_stderr: bool) -> tuple[int, str, str]:
    out = io.StringIO()
    err = out if merge_stderr else io.StringIO()
    last_resort = logging.StreamHandler(err)
    last_resort.setLevel(logging.WARNING)
    thread = threading.get_ident()
    last_resort.addFilter(lambda record: record.thread == thread)
    root = logging.getLogger()
    with _one_at_a_time, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        root.addHandler(last_resort)
        try:
            code = main(argv)
        except SystemExit as exit:  # argparse's refusals (2), as the process exits
            code = _exit_status(exit.code)
        finally:
            root.removeHandler(last_resort)
    return code, out.getvalue(), "" if merge_stderr else err.getvalue()


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # as the interpreter does with sys.exit("message")
    return 1
