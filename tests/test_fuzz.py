"""The fuzzer (tests/fuzz.py) against a real server process: mutated updates on both
endpoints while honest peers edit keep every invariant; and with each fault of the
hardening issue put back on purpose, the same fuzzer finds it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzz import fuzz_server, node_available

SEED = int(os.environ.get("COLLAB_FUZZ_SEED", "20261125"))
ROUNDS = int(os.environ.get("COLLAB_FUZZ_ROUNDS", "1500"))

pytestmark = pytest.mark.slow


async def test_mutated_updates_on_both_endpoints_keep_every_invariant(tmp_path: Path):
    lines: list[str] = []

    report = await fuzz_server(tmp_path, seed=SEED, rounds=ROUNDS, log=lines.append)

    assert not report.violations, "\n".join([report.summary(), *lines[-20:]])
    assert report.rounds == ROUNDS
    # The attacks exercised both outcomes on both endpoints.
    assert report.outcomes["ws accepted"] and report.outcomes["ws invalid_update"]
    assert report.outcomes["yjs handled"] and report.outcomes["yjs closed 4400"]


# Each fault, put back into the server process before it starts.

APPLIED_BEFORE_CHECKED = """
from collab.wire import replica
checked = replica.Replica.check
def check(self, update, *args):
    if len(update) < 1024:  # (deeper values would crash pycrdt: finding 2, not this one)
        try:
            self.doc.apply_update(update)  # the fault: pycrdt first, the strict reader after
        except Exception:
            pass
    return checked(self, update, *args)
replica.Replica.check = check
"""

NO_DEPTH_LIMIT = """
from collab.wire import yformat
LIMIT = {limit}
def read_any(self, depth=0):
    stack = [(False, 0)]
    while stack:
        is_key, level = stack.pop()
        if is_key:
            self.read_var_string()
            continue
        if level > LIMIT:
            raise yformat.FormatError("too deep")
        tag = self.read_u8()
        if tag == 125:
            self.read_var_int()
        elif tag == 124:
            self.read_bytes(4)
        elif tag in (122, 123):
            self.read_bytes(8)
        elif tag == 119:
            self.read_var_string()
        elif tag == 118:
            stack.extend([(False, level + 1), (True, level)] * self.read_var_uint())
        elif tag == 117:
            stack.extend([(False, level + 1)] * self.read_var_uint())
        elif tag == 116:
            self.read_var_bytes()
        elif tag not in (120, 121, 126, 127):
            raise yformat.FormatError("tag")
yformat.Reader.read_any = read_any
"""

TRAILING_BYTES_ACCEPTED = """
from collab.wire import yformat
yformat.Reader.at_end = property(lambda self: True)  # the fault: trailing bytes ignored
"""


@pytest.mark.parametrize(
    ("fault", "prelude", "needs_node", "found"),
    [
        # A live document unlike the stored one, seen by a check or by a peer syncing.
        (
            "1: applied, then refused",
            APPLIED_BEFORE_CHECKED,
            False,
            ("live document", "cannot apply"),
        ),
        # The deep value reaches an honest peer (and, deeper, kills the process).
        (
            "2: deep values crash",
            NO_DEPTH_LIMIT.format(limit=10**9),
            False,
            ("cannot apply", "died"),
        ),
        ("3: deep values stored", NO_DEPTH_LIMIT.format(limit=20_000), True, ("cannot apply",)),
        (
            "4: trailing bytes stored",
            TRAILING_BYTES_ACCEPTED,
            False,
            ("cannot apply", "strict reader"),
        ),
    ],
    ids=["finding-1", "finding-2", "finding-3", "finding-4"],
)
@pytest.mark.allow_error_logs
async def test_the_fuzzer_finds_each_fault_when_it_is_put_back(
    tmp_path: Path, fault: str, prelude: str, needs_node: bool, found: tuple[str, ...]
):
    if needs_node and not node_available():
        pytest.skip("Node.js and tests/node/node_modules are needed to replay the log in Yjs")

    report = await fuzz_server(tmp_path, seed=1, rounds=400, python_prelude=prelude)

    assert report.violations, f"finding {fault} was not found: {report.summary()}"
    # Found as itself (under load, another symptom of it may come first).
    assert any(words in v for v in report.violations for words in found), report.violations
