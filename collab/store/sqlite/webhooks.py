"""Webhooks on SQLite (WebhookStore): the ``webhooks`` table, one row per
webhook with its feed position (an update ``id``) and its lease, written on the
writer's connection (a position must survive a crash: deliveries resume from it)."""

from __future__ import annotations

import time
from typing import Any

from collab.store.records import WebhookState
from collab.store.sqlite.base import SQLiteBase, write_transaction

_COLUMNS = (
    "name, position, lease_instance, lease_until_s, delivered, failures, last_error, "
    "last_attempt_s, last_success_s"
)


class SQLiteWebhooks(SQLiteBase):
    """The WebhookStore part of :class:`~collab.store.sqlite.SQLiteStore`."""

    async def lease_webhook(self, name: str, instance: str, lease_s: float) -> WebhookState | None:
        def write() -> WebhookState | None:
            conn = self._w
            now = time.time()
            with write_transaction(conn):
                row = conn.execute(f"SELECT {_COLUMNS} FROM webhooks WHERE name = ?", (name,))
                found = row.fetchone()
                if found is None:
                    conn.execute(
                        "INSERT INTO webhooks (name, lease_instance, lease_until_s) VALUES (?,?,?)",
                        (name, instance, now + lease_s),
                    )
                    return WebhookState(name, None, instance, now + lease_s)
                state = _state(found)
                if state.lease_instance not in (None, instance) and state.lease_until_s > now:
                    return None
                conn.execute(
                    "UPDATE webhooks SET lease_instance = ?, lease_until_s = ? WHERE name = ?",
                    (instance, now + lease_s, name),
                )
            return _state((*found[:2], instance, now + lease_s, *found[4:]))

        return await self._run(self._writer, write)

    async def save_webhook(self, state: WebhookState, instance: str) -> bool:
        def write() -> bool:
            cursor = self._w.execute(
                "UPDATE webhooks SET position = ?, delivered = ?, failures = ?, last_error = ?, "
                "last_attempt_s = ?, last_success_s = ? WHERE name = ? AND lease_instance = ?",
                (
                    None if state.position is None else int(state.position),
                    state.delivered,
                    state.failures,
                    state.last_error,
                    state.last_attempt_s,
                    state.last_success_s,
                    state.name,
                    instance,
                ),
            )
            return cursor.rowcount > 0

        return await self._run(self._writer, write)

    async def release_webhook(self, name: str, instance: str) -> None:
        def write() -> None:
            self._w.execute(
                "UPDATE webhooks SET lease_instance = NULL, lease_until_s = 0 "
                "WHERE name = ? AND lease_instance = ?",
                (name, instance),
            )

        await self._run(self._writer, write)

    async def webhook_states(self) -> list[WebhookState]:
        def read() -> list[WebhookState]:
            rows = self._r.execute(f"SELECT {_COLUMNS} FROM webhooks ORDER BY name").fetchall()
            return [_state(row) for row in rows]

        return await self._run(self._reader, read)


def _state(row: tuple[Any, ...]) -> WebhookState:
    return WebhookState(*row)
