"""Version names on MongoDB (VersionNameStore): the ``version_names`` collection,
a document per named version, unique on ``(doc, seq)``."""

from __future__ import annotations

from pymongo import ASCENDING

from collab.store.mongodb.base import MongoBase, store_errors
from collab.store.records import VersionName


class MongoNames(MongoBase):
    """The VersionNameStore part of :class:`~collab.store.mongodb.MongoStore`."""

    async def name_version(self, name: VersionName) -> None:
        with store_errors(f"naming a version of {name.doc!r}"):
            await self._collection("version_names").replace_one(
                {"doc": name.doc, "seq": name.seq},
                {
                    "doc": name.doc,
                    "seq": name.seq,
                    "name": name.name,
                    "user": name.user,
                    "time_s": name.time_s,
                },
                upsert=True,
            )

    async def unname_version(self, doc: str, seq: int) -> bool:
        with store_errors(f"unnaming a version of {doc!r}"):
            deleted = await self._collection("version_names").delete_one({"doc": doc, "seq": seq})
        return deleted.deleted_count > 0

    async def version_names(self, doc: str) -> list[VersionName]:
        with store_errors(f"reading the version names of {doc!r}"):
            cursor = self._collection("version_names").find({"doc": doc}, sort=[("seq", ASCENDING)])
            rows = await cursor.to_list(None)
        return [
            VersionName(r["doc"], r["seq"], r["name"], r.get("user"), r["time_s"]) for r in rows
        ]
