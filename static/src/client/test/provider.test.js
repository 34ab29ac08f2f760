// The provider's part of the protocol with a fake server (test/fakes.js), without
// IndexedDB (`persist: false`), under Node's test runner: edits are sent and kept until
// acknowledged, edits made before a sync are sent once as what the server lacks, a new
// epoch resets the copy, an edit refused for good is undone by a resync.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as Y from "yjs";
import { DocumentProvider } from "../index.js";
import { FakeServer, until } from "./fakes.js";

async function opened(server, name) {
  const provider = new DocumentProvider(server.client, name, { persist: false });
  await provider.whenLoaded;
  return provider;
}

test("an edit made with the plain Yjs API is sent, and saved once acknowledged", async (t) => {
  const server = new FakeServer();
  t.after(() => server.destroy());
  server.accept();
  const provider = await opened(server, "plain-api");
  server.sync();
  assert.equal(provider.synced, true);
  assert.equal(provider.role, "write");
  assert.equal(provider.epoch, "e1");

  provider.doc.getText("text").insert(0, "hello"); // origin null, as most code edits
  assert.equal(provider.queued, 1);
  assert.equal(provider.saved, false);
  const saved = provider.whenSaved();
  const [sent] = server.ackAll();
  assert.equal(sent.doc, "plain-api");
  await saved;
  assert.equal(provider.queued, 0);
  assert.equal(server.doc.getText("text").toString(), "hello");
  assert.equal(provider.seq, 1);
});

test("edits made before the first sync are sent once synced, as one update the server lacks", async (t) => {
  const server = new FakeServer();
  t.after(() => server.destroy());
  server.doc.getText("text").insert(0, "server ");
  server.seq = 1;
  const provider = await opened(server, "before-sync");
  const text = provider.doc.getText("text");
  for (const word of ["a", "b", "c"]) provider.doc.transact(() => text.insert(text.length, word), "typing");
  text.insert(text.length, "!");
  assert.equal(provider.queued, 4);
  server.accept();
  const subscribe = server.sync();
  assert.equal(subscribe.epoch, undefined); // a first subscription: the whole diff
  const updates = server.ackAll();
  assert.equal(updates.length, 1);
  assert.equal(provider.queued, 0);
  assert.equal(provider.doc.getText("text").toString(), server.doc.getText("text").toString());
  assert.match(server.doc.getText("text").toString(), /abc!/);
});

test("a reconnection resumes with the epoch, the seq and the state vector, and sends what was not acknowledged", async (t) => {
  const server = new FakeServer();
  t.after(() => server.destroy());
  server.accept();
  const provider = await opened(server, "resume");
  server.sync();
  provider.doc.getText("text").insert(0, "kept");
  server.ackAll();
  provider.doc.getText("text").insert(4, " and more");
  assert.equal(server.ws.take("update").length, 1); // sent, never acknowledged: the connection is cut
  await server.cut();
  assert.equal(provider.synced, false);
  assert.equal(provider.queued, 1);
  server.accept();
  const subscribe = server.sync();
  assert.equal(subscribe.epoch, "e1");
  assert.equal(subscribe.seq, 1);
  server.ackAll();
  assert.equal(provider.queued, 0);
  assert.equal(server.doc.getText("text").toString(), "kept and more");
});

test("a sync of another epoch resets the copy and keeps the old one with the edits it dropped", async (t) => {
  const server = new FakeServer();
  t.after(() => server.destroy());
  server.accept();
  const provider = await opened(server, "epoch");
  server.sync();
  const before = provider.doc;
  provider.doc.getText("text").insert(0, "never stored");
  server.ws.take("update");
  // The document was deleted and recreated on the server: another epoch.
  server.doc = new Y.Doc();
  server.doc.getText("text").insert(0, "new life");
  server.epoch = "e2";
  const resets = [];
  provider.on("reset", (event) => resets.push(event));
  await server.cut(1012);
  server.accept();
  server.sync();
  assert.equal(resets.length, 1);
  assert.equal(resets[0].reason, "epoch");
  assert.equal(resets[0].dropped, 1);
  assert.notEqual(provider.doc, before);
  assert.equal(resets[0].doc, provider.doc);
  assert.equal(provider.doc.getText("text").toString(), "new life");
  assert.equal(provider.oldCopy.doc.getText("text").toString(), "never stored");
  assert.equal(provider.queued, 0);
  assert.equal(provider.epoch, "e2");
  provider.dismissOldCopy();
  assert.equal(provider.oldCopy, null);
});

test("an edit the server refuses for good is undone: the copy is taken afresh from the server", async (t) => {
  const server = new FakeServer();
  t.after(() => server.destroy());
  server.doc.getText("text").insert(0, "stored");
  server.accept();
  const provider = await opened(server, "refused");
  server.sync();
  const errors = [];
  const resets = [];
  provider.on("error", (error) => errors.push(error));
  provider.on("reset", (event) => resets.push(event));
  provider.doc.getText("text").insert(0, "bad ");
  const [update] = server.ws.take("update");
  server.ws.receive({ type: "error", doc: "refused", ref: update.ref, code: "invalid_update", message: "no" });
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "invalid_update");
  assert.equal(provider.refused.length, 1);
  assert.equal(provider.status.refused, true);
  assert.equal(provider.saved, false);
  // The resync ends the subscription and subscribes afresh.
  await until(() => server.ws.sent.some((m) => m.type === "unsubscribe"), "an unsubscribe");
  server.ws.take("unsubscribe");
  server.ws.receive({ type: "unsubscribed", doc: "refused" });
  const subscribe = server.sync();
  assert.deepEqual(subscribe.sv, new Uint8Array([0])); // the whole document
  assert.equal(resets.length, 1);
  assert.equal(resets[0].reason, "resync");
  assert.equal(provider.doc.getText("text").toString(), "stored");
  assert.equal(provider.saved, true);
});

test("a read-only grant refuses the edits made before the sync", async (t) => {
  const server = new FakeServer();
  t.after(() => server.destroy());
  const provider = await opened(server, "read-only");
  provider.doc.getText("text").insert(0, "offline edit");
  const errors = [];
  provider.on("error", (error) => errors.push(error));
  server.accept();
  server.sync({ role: "read" });
  assert.equal(provider.readOnly, true);
  assert.equal(errors[0]?.code, "read_only");
  assert.equal(server.ws.take("update").length, 0);
});

test("presence changes faster than the interval are sent as the latest state, and a refused one does not close the document", async (t) => {
  const server = new FakeServer();
  t.after(() => server.destroy());
  server.accept();
  const provider = await opened(server, "presence");
  server.sync();
  await new Promise((resolve) => setTimeout(resolve, 60)); // past the interval of the sync's own
  server.ws.take("awareness");
  for (let i = 0; i < 100; i++) provider.awareness.setLocalStateField("cursor", i); // a caret moving
  const first = server.ws.take("awareness");
  assert.equal(first.length, 1); // at once: the first change
  await until(() => server.ws.sent.some((m) => m.type === "awareness"), "the trailing presence update");
  const later = server.ws.take("awareness");
  assert.equal(later.length, 1); // the other 99 changes, as one: the latest state
  const remote = new Y.Doc();
  const { Awareness, applyAwarenessUpdate } = await import("y-protocols/awareness");
  const seen = new Awareness(remote);
  applyAwarenessUpdate(seen, first[0].update, "server");
  applyAwarenessUpdate(seen, later[0].update, "server");
  assert.equal(seen.getStates().get(provider.doc.clientID).cursor, 99);

  server.ws.receive({ type: "error", doc: "presence", code: "awareness_limit", message: "at most 30 awareness updates a second: this one was dropped" });
  assert.equal(provider.error ?? null, null);
  provider.doc.getText("text").insert(0, "still open");
  assert.equal(server.ackAll().length, 1);
  assert.equal(provider.queued, 0);
  remote.destroy();
});
