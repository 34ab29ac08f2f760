"""EndOfPass: callables queued in one pass run after it, together, in order."""

from __future__ import annotations

import asyncio
import logging

import pytest

from collab.passes import EndOfPass


async def test_calls_run_after_the_pass_in_order_and_one_that_raises_stops_none(
    caplog: pytest.LogCaptureFixture,
):
    end_of_pass = EndOfPass(logging.getLogger("test"))
    ran: list[int] = []

    def fails() -> None:
        raise RuntimeError("boom")

    end_of_pass.call(lambda: ran.append(1))
    end_of_pass.call(fails)
    end_of_pass.call(lambda: ran.append(2))
    assert ran == []  # not during this pass
    await asyncio.sleep(0)
    assert ran == [1, 2]
    assert "boom" in caplog.text
    end_of_pass.call(lambda: ran.append(3))  # a new pass, a new callback
    await asyncio.sleep(0)
    assert ran == [1, 2, 3]


async def test_many_calls_in_one_pass_cost_one_loop_callback(monkeypatch: pytest.MonkeyPatch):
    loop = asyncio.get_running_loop()
    scheduled = 0
    call_soon = loop.call_soon

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal scheduled
        scheduled += 1
        return call_soon(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon", counting)
    end_of_pass = EndOfPass(logging.getLogger("test"))
    ran: list[int] = []
    for i in range(100):
        end_of_pass.call(lambda i=i: ran.append(i))
    monkeypatch.undo()
    await asyncio.sleep(0)
    assert ran == list(range(100))
    assert scheduled == 1
