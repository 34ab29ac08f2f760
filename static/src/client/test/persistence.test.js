// The copy kept in IndexedDB (persistence.js, outbox.js) under Node's test runner, with
// fake-indexeddb standing in for the browser's IndexedDB: the outbox keeps each
// document's entries apart, a provider opened again adopts and sends what the last one
// left unacknowledged, and databases of two documents never share a name.
import "fake-indexeddb/auto";
import assert from "node:assert/strict";
import { test } from "node:test";
import { DocumentProvider } from "../index.js";
import { Outbox, openOutboxDatabase } from "../outbox.js";
import { LocalCopy } from "../persistence.js";
import { FakeServer } from "./fakes.js";

const bytes = (...b) => new Uint8Array(b);

test("the outbox keeps each document's entries and meta apart, and clears one document whole", async () => {
  const db = await openOutboxDatabase();
  const a = new Outbox(db, "a", "tab-1");
  const b = new Outbox(db, "a/b", "tab-1");
  await a.put({ owner: "tab-1", n: 1, epoch: "e", update: bytes(1), count: 1 });
  await a.put({ owner: "tab-2", n: 1, epoch: "e", update: bytes(2), count: 1 });
  await b.put({ owner: "tab-1", n: 1, epoch: "e", update: bytes(3), count: 1 });
  await a.setMeta("e", 7, 1);
  assert.deepEqual((await a.entries()).map((e) => [e.owner, e.update[0]]), [["tab-1", 1], ["tab-2", 2]]);
  assert.deepEqual(await a.meta(), { doc: "a", epoch: "e", seq: 7, gen: 1 });

  const [first, second] = await a.entries();
  await a.replace([first, second], [{ owner: "tab-1", n: 2, epoch: "e", update: bytes(4), count: 2 }]);
  assert.deepEqual((await a.entries()).map((e) => [e.n, e.count]), [[2, 2]]);

  await a.clear();
  assert.deepEqual(await a.entries(), []);
  assert.equal(await a.meta(), null);
  assert.equal((await b.entries()).length, 1);
});

test("no two documents and epochs share a database name", () => {
  const names = new Set();
  for (const [doc, epoch, gen] of [["a@b", null, 0], ["a", "b", 0], ["a", "b", 1], ["a#1", "b", 0], ["a", "b#1", 0], ["a", null, 0]]) {
    names.add(new LocalCopy(doc, true).dbName(epoch, gen));
  }
  assert.equal(names.size, 6);
  assert.equal(new LocalCopy("a@b", true).dbName(null), "collab:a%40b@-");
  assert.equal(new LocalCopy("a", true).dbName("e/1", 2), "collab:a@e%2F1#2");
});

test("edits made offline outlive their provider: the next provider of the document loads and sends them", async (t) => {
  const server = new FakeServer();
  t.after(() => server.destroy());
  const first = new DocumentProvider(server.client, "offline", {});
  assert.equal(first.persist, true);
  await first.whenLoaded;
  first.doc.getText("text").insert(0, "written offline");
  assert.equal(first.queued, 1);
  await first.whenPersisted();
  first.destroy();

  const second = new DocumentProvider(server.client, "offline");
  await second.whenLoaded;
  assert.equal(second.doc.getText("text").toString(), "written offline"); // from its y-indexeddb store
  assert.equal(second.queued, 1); // the outbox entry, adopted
  server.accept();
  server.sync();
  const [update] = server.ackAll();
  assert.ok(update);
  assert.equal(server.doc.getText("text").toString(), "written offline");
  assert.equal(second.queued, 0);
  await second.whenPersisted();

  // Acknowledged: the outbox is empty, the meta holds the epoch and seq to resume from.
  const outbox = new Outbox(await openOutboxDatabase(), "offline", "");
  assert.deepEqual(await outbox.entries(), []);
  second.destroy();
  await second.whenPersisted();
  const meta = await outbox.meta();
  assert.equal(meta.epoch, "e1");
  assert.equal(meta.seq, 1);
});
