// A fake server for the package's unit tests: a WebSocket the test answers as the
// server would (docs/PROTOCOL.md), with a Y.Doc as the server's document.
import { decode, encode } from "@msgpack/msgpack";
import * as Y from "yjs";
import { CollabClient } from "../index.js";

export class FakeSocket {
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closed = null;
    FakeSocket.last = this;
  }
  send(frame) {
    this.sent.push(decode(frame));
  }
  close(code, reason) {
    this.readyState = 3;
    this.closed = { code, reason };
  }
  open() {
    this.readyState = 1;
    this.onopen();
  }
  receive(message) {
    this.onmessage({ data: encode(message).slice().buffer });
  }
  /** Takes the messages of `type` sent so far (and forgets them). */
  take(type) {
    const taken = this.sent.filter((m) => m.type === type);
    this.sent = this.sent.filter((m) => m.type !== type);
    return taken;
  }
}

/** A client whose socket the test opens (`server.accept()`), and the server's side. */
export class FakeServer {
  constructor({ epoch = "e1", maxFrameBytes = 1 << 20 } = {}) {
    this.epoch = epoch;
    this.maxFrameBytes = maxFrameBytes;
    this.doc = new Y.Doc();
    this.seq = 0;
    this.client = new CollabClient("ws://server/ws", { WebSocket: FakeSocket, heartbeatMs: 600000 });
    this.ws = FakeSocket.last;
  }

  accept() {
    this.ws.open();
    this.ws.receive({ type: "welcome", version: 1, server: "collab/test", instance: "t", limits: { max_frame_bytes: this.maxFrameBytes } });
  }

  /** The connection is cut (`code`), and the client reconnects at once. */
  async cut(code = 1006) {
    const old = this.ws;
    old.onclose({ code, reason: "" });
    this.client.reconnect();
    await until(() => FakeSocket.last !== old, "a new connection");
    this.ws = FakeSocket.last;
  }

  /** Answers the latest `subscribe` with a sync from the server's document. */
  sync({ role = "write", epoch = this.epoch } = {}) {
    const [subscribe] = this.ws.take("subscribe").slice(-1);
    if (subscribe === undefined) throw new Error("no subscribe was sent");
    const reset = subscribe.epoch !== undefined && subscribe.epoch !== epoch;
    const update = reset ? Y.encodeStateAsUpdate(this.doc) : Y.encodeStateAsUpdate(this.doc, subscribe.sv);
    this.ws.receive({ type: "sync", doc: subscribe.doc, epoch, seq: this.seq, update, sv: Y.encodeStateVector(this.doc), role, mode: reset ? "reset" : "diff" });
    return subscribe;
  }

  /** Stores and acknowledges every update sent so far; returns them. */
  ackAll() {
    const updates = this.ws.take("update");
    for (const m of updates) {
      Y.applyUpdate(this.doc, m.update);
      this.seq += 1;
      this.ws.receive({ type: "ack", doc: m.doc, ref: m.ref, seq: this.seq });
    }
    return updates;
  }

  destroy() {
    this.client.destroy();
    this.doc.destroy();
  }
}

/** Waits for `predicate()` to hold, checking after each turn of the event loop. */
export async function until(predicate, what = "a condition") {
  for (let i = 0; i < 500; i++) {
    if (predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  throw new Error(`timed out waiting for ${what}`);
}
