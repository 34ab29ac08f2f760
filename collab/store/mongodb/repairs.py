"""Repairs on MongoDB (RepairStore): entries set aside go to the ``quarantine``
collection, in one transaction with the new epoch."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Mapping
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import PyMongoError

from collab.errors import StoreError
from collab.store.mongodb.base import DURABLE, MongoBase, store_errors
from collab.store.mongodb.snapshots import recount_bytes_since_snapshot
from collab.store.records import QuarantinedEntry, Repair


class MongoRepairs(MongoBase):
    """The RepairStore part of :class:`~collab.store.mongodb.MongoStore`."""

    async def repair(
        self, doc: str, updates: Mapping[int, Repair], snapshots: Mapping[int, str]
    ) -> str:
        # An offline tool's rare operation, so one transaction (unlike appends).
        assert self._client is not None
        epoch = secrets.token_hex(8)
        now = time.time()
        quarantine = self._collection("quarantine")
        with store_errors(f"repairing {doc!r}"):
            async with self._client.start_session() as session:
                await session.start_transaction(write_concern=DURABLE)
                try:
                    for seq, fix in sorted(updates.items()):
                        entry = await self._log.find_one(
                            {"doc": doc, "seq": {"$lte": seq}, "last": {"$gte": seq}},
                            session=session,
                        )
                        if entry is None:
                            raise StoreError(f"{doc}: no update at seq {seq}")
                        index = seq - entry["seq"]
                        original = entry["updates"][index]["data"]
                        await self._log.update_one(
                            {"_id": entry["_id"]},
                            {
                                "$set": {
                                    f"updates.{index}.data": fix.data,
                                    f"sizes.{index}": len(fix.data),
                                }
                            },
                            session=session,
                        )
                        await quarantine.insert_one(
                            _quarantined(doc, "update", seq, original, fix.reason, now),
                            session=session,
                        )
                    for seq, reason in sorted(snapshots.items()):
                        parts = await self._snapshots.find(
                            {"doc": doc, "seq": seq}, sort=[("part", ASCENDING)], session=session
                        ).to_list()
                        if not parts:
                            continue
                        digest = parts[0].get("digest")  # one encoding of the version
                        data = b"".join(p["data"] for p in parts if p.get("digest") == digest)
                        await quarantine.insert_one(
                            _quarantined(doc, "snapshot", seq, data, reason, now),
                            session=session,
                        )
                        await self._snapshots.delete_many({"doc": doc, "seq": seq}, session=session)
                    newest = await self._snapshots.find_one(
                        {"doc": doc, "part": 0},
                        {"seq": 1},
                        sort=[("seq", DESCENDING)],
                        session=session,
                    )
                    await self._documents.update_one(
                        {"_id": doc},
                        {"$set": {"epoch": epoch, "snapshot_seq": newest["seq"] if newest else 0}},
                        session=session,
                    )
                except BaseException:
                    with contextlib.suppress(PyMongoError):
                        await session.abort_transaction()
                    raise
                await session.commit_transaction()
            row = await self._documents.find_one({"_id": doc}, {"snapshot_seq": 1})
            await recount_bytes_since_snapshot(
                self._documents, self._log, doc, row.get("snapshot_seq", 0) if row else 0
            )
        return epoch

    async def quarantined(self, doc: str) -> list[QuarantinedEntry]:
        with store_errors(f"reading the quarantine of {doc!r}"):
            rows = (
                await self._collection("quarantine")
                .find({"doc": doc}, sort=[("quarantined_s", ASCENDING), ("_id", ASCENDING)])
                .to_list()
            )
        return [
            QuarantinedEntry(
                row["doc"],
                row["kind"],
                row["seq"],
                row["data"],
                row["reason"],
                row["quarantined_s"],
            )
            for row in rows
        ]


def _quarantined(
    doc: str, kind: str, seq: int, data: bytes, reason: str, now: float
) -> dict[str, Any]:
    return {
        "doc": doc,
        "kind": kind,
        "seq": seq,
        "data": data,
        "reason": reason,
        "quarantined_s": now,
    }
