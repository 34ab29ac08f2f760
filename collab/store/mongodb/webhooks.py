"""Webhooks on MongoDB (WebhookStore): the ``webhooks`` collection, one entry per
webhook (``_id`` its name) with its feed position (a change stream resume token)
and its lease, taken with one conditional upsert."""

from __future__ import annotations

import time
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from collab.store.mongodb.base import MongoBase, store_errors
from collab.store.records import WebhookState

_COUNTS = ("delivered", "failures", "last_error", "last_attempt_s", "last_success_s")


class MongoWebhooks(MongoBase):
    """The WebhookStore part of :class:`~collab.store.mongodb.MongoStore`."""

    async def lease_webhook(self, name: str, instance: str, lease_s: float) -> WebhookState | None:
        now = time.time()
        free = {
            "_id": name,
            "$or": [
                {"lease_instance": {"$in": [None, instance]}},
                {"lease_until_s": {"$lte": now}},
            ],
        }
        with store_errors("leasing a webhook"):
            try:
                row = await self._collection("webhooks").find_one_and_update(
                    free,
                    {"$set": {"lease_instance": instance, "lease_until_s": now + lease_s}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                return None  # it exists with another's lease: the upsert could not insert
        return _state(row)

    async def save_webhook(self, state: WebhookState, instance: str) -> bool:
        with store_errors("saving a webhook"):
            result = await self._collection("webhooks").update_one(
                {"_id": state.name, "lease_instance": instance},
                {
                    "$set": {
                        "position": state.position,
                        **{key: getattr(state, key) for key in _COUNTS},
                    }
                },
            )
        return result.matched_count > 0

    async def release_webhook(self, name: str, instance: str) -> None:
        with store_errors("releasing a webhook"):
            await self._collection("webhooks").update_one(
                {"_id": name, "lease_instance": instance},
                {"$set": {"lease_instance": None, "lease_until_s": 0.0}},
            )

    async def webhook_states(self) -> list[WebhookState]:
        with store_errors("reading webhooks"):
            rows = await self._collection("webhooks").find().sort("_id", 1).to_list(None)
        return [_state(row) for row in rows]


def _state(row: dict[str, Any]) -> WebhookState:
    return WebhookState(
        row["_id"],
        row.get("position"),
        row.get("lease_instance"),
        row.get("lease_until_s", 0.0),
        **{key: row[key] for key in _COUNTS if key in row},
    )
