// The browser client's connection rules with a fake WebSocket and a fake clock, under
// Node's test runner (tests/test_frontend_units.py bundles and runs it): the heartbeat
// drops a connection only for a ping unanswered past the timeout with nothing heard
// since, and no frame larger than the server accepts is sent.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";
import { CollabClient, Sent } from "../client.js";
import { FakeSocket as SharedFakeSocket } from "./fakes.js";

let clock = 0;
const realNow = performance.now;

// The shared fake socket, answering the pings sent so far as the server would.
class FakeSocket extends SharedFakeSocket {
  pongs() {
    for (const m of this.sent.splice(0)) if (m.type === "ping") this.receive({ type: "pong", id: m.id });
  }
}

function advance(ms, each = () => {}) {
  for (let t = 0; t < ms; t += 100) {
    clock += 100;
    mock.timers.tick(100);
    each();
  }
}

function online(options) {
  const client = new CollabClient("ws://server/ws", { WebSocket: FakeSocket, ...options });
  const ws = FakeSocket.last;
  ws.open();
  ws.receive({ type: "welcome", user: null, limits: { max_frame_bytes: 1000 } });
  assert.equal(client.state, "online");
  return { client, ws };
}

beforeEach(() => {
  clock = 0;
  performance.now = () => clock;
  mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
});

afterEach(() => {
  mock.timers.reset();
  performance.now = realNow;
});

test("a heartbeat that fires later than the timeout does not drop a connection that answers", () => {
  const { client, ws } = online({ heartbeatMs: 10000, heartbeatTimeoutMs: 8000 });
  advance(60000, () => ws.pongs());
  assert.equal(client.state, "online");
  assert.equal(client.connections, 1);
  assert.equal(ws.closed, null);
  client.destroy();
});

test("a ping unanswered past the timeout, with nothing heard since, drops the connection", () => {
  const { client, ws } = online({ heartbeatMs: 5000, heartbeatTimeoutMs: 8000 });
  ws.pongs();
  advance(7900);
  assert.equal(client.state, "online");
  advance(8000);
  assert.equal(client.state, "reconnecting");
  assert.equal(client.lastError, "no answer to heartbeats");
  assert.equal(ws.closed.code, 4000);
  client.destroy();
});

test("other frames heard after a ping keep the connection, whatever became of the ping", () => {
  const { client, ws } = online({ heartbeatMs: 5000, heartbeatTimeoutMs: 8000 });
  advance(30000, () => ws.receive({ type: "awareness", doc: "d", update: new Uint8Array([0]) }));
  assert.equal(client.state, "online");
  client.destroy();
});

test("an edit sent with no ping in flight sends one: a dead connection is found a timeout later", () => {
  const { client, ws } = online({ heartbeatMs: 60000, heartbeatTimeoutMs: 8000 });
  ws.pongs();
  advance(1000);
  assert.equal(client.trySend({ type: "update", doc: "d", ref: 1, update: new Uint8Array([0, 0]) }), Sent.SENT);
  assert.ok(ws.sent.some((m) => m.type === "ping"));
  advance(8100);
  assert.equal(client.state, "reconnecting");
  client.destroy();
});

test("no frame larger than the server's limit is sent; after a 1009 close none that large again", () => {
  const { client, ws } = online({});
  assert.equal(client.maxFrameBytes, 1000); // from welcome.limits
  assert.equal(client.trySend({ type: "update", doc: "d", ref: 1, update: new Uint8Array(2000) }), Sent.TOO_BIG);
  assert.ok(!ws.sent.some((m) => m.type === "update"));
  assert.equal(client.trySend({ type: "update", doc: "d", ref: 2, update: new Uint8Array(900) }), Sent.SENT);
  // A proxy in between accepts less than the server announced.
  ws.onclose({ code: 1009, reason: "message too big" });
  assert.equal(client.state, "reconnecting");
  advance(6000);
  const next = FakeSocket.last;
  assert.notEqual(next, ws);
  next.open();
  next.receive({ type: "welcome", user: null, limits: { max_frame_bytes: 1000 } });
  assert.ok(client.maxFrameBytes < 1000);
  assert.equal(client.trySend({ type: "update", doc: "d", ref: 3, update: new Uint8Array(900) }), Sent.TOO_BIG);
  client.destroy();
});
