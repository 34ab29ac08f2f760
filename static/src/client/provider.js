// A Yjs provider for one document over a CollabClient: the native protocol's sync,
// resume and reset (docs/PROTOCOL.md 1.4-1.5), acknowledged edits, awareness, the
// document and its outbox kept in IndexedDB, and the tabs of one browser kept in step
// through a BroadcastChannel, also while offline. docs/CLIENT.md has the API.

import * as Y from "yjs";
import {
  Awareness,
  applyAwarenessUpdate,
  encodeAwarenessUpdate,
  removeAwarenessStates,
} from "y-protocols/awareness";
import { IndexeddbPersistence } from "y-indexeddb";
import { deleteDB } from "lib0/indexeddb";
import { ObservableV2 } from "lib0/observable";
import { Outbox, holdTabLock, liveOwners, openOutboxDatabase } from "./outbox.js";

/** This page's id: owner of the outbox entries it writes, holder of a Web Lock. */
export const TAB_ID =
  globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
const tabAlive = holdTabLock(TAB_ID);

const MAX_IN_FLIGHT = 64; // updates sent and not yet acknowledged; later edits wait, merged
const MAX_PENDING_ENTRIES = 32; // unsent edits kept apart; past it they are merged into one
const MAX_EARLY_BYTES = 32 * 1024 * 1024; // updates arriving between the parts of a sync
const RETRY_MS = 1000; // after `overloaded` or `load_failed`
const MAX_REFUSED = 100; // refused edits kept for the page to inspect (the latest)

const isEmptyUpdate = (u) => u.length === 2 && u[0] === 0 && u[1] === 0;

function concat(chunks, total) {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Keeps `doc` (a Y.Doc) in sync with the server's document `name`.
 *
 * Events (`on`/`off`):
 * - `status` (): anything in `status` changed
 * - `synced` (synced: boolean)
 * - `saved` (saved: boolean): every local edit is (or no longer is) acknowledged
 * - `progress` ({received, total}): a large sync is arriving in parts
 * - `reset` ({doc, awareness, dropped}): the server's document has another epoch; the
 *   provider now holds a new Y.Doc and Awareness, rebind the editor to them
 * - `error` (error): the server refused the document or an edit ({code, message})
 */
export class DocumentProvider extends ObservableV2 {
  constructor(client, name, options = {}) {
    super();
    this.client = client;
    this.name = name;
    this.doc = options.doc ?? new Y.Doc();
    this.awareness = new Awareness(this.doc);
    this.persist = options.persist ?? typeof indexedDB !== "undefined";
    this.epoch = null;
    this.seq = 0; // every update of the document up to this seq is in `doc`
    this.role = null; // "write" or "read", from the latest sync
    this.synced = false; // the current connection's sync is complete
    this.loaded = false; // the copy kept in IndexedDB is in `doc`
    this.error = null; // why the server refused the subscription
    this.syncProgress = null; // {received, total} while a sync arrives in parts
    this.syncMode = null;
    this.syncParts = 0; // frames the last sync came in (more than one: a large document)
    this.refused = []; // edits the server refused for good
    this.resets = 0;
    this._pending = []; // outbox entries not sent: {owner, n, epoch, update, count}
    this._inFlight = new Map(); // ref -> entries covered by that update
    this._ref = 0;
    this._n = 0;
    this._parts = null;
    this._early = [];
    this._earlyBytes = 0;
    this._retry = null;
    this._flushTimer = null;
    this._bcClients = new Set(); // awareness clients of this browser's other tabs
    this._hiddenState = null;
    this._outbox = null;
    this._disk = Promise.resolve();
    this._metaTimer = null;
    this._persistence = null;
    this._storeEpoch = null;
    this._channel = null;
    this._bcOrigin = { broadcast: name };
    this._diskOrigin = { outbox: name };
    this._destroyed = false;

    this._onDocUpdate = (update, origin) => this._docUpdate(update, origin);
    this._onAwarenessUpdate = (changes, origin) => this._awarenessUpdate(changes, origin);
    this._onPageHide = () => this._pageHide();
    this._onPageShow = (event) => this._pageShow(event);
    this._bind();
    globalThis.addEventListener?.("pagehide", this._onPageHide);
    globalThis.addEventListener?.("pageshow", this._onPageShow);

    // Without IndexedDB (a private window may refuse it) the provider still works,
    // only nothing outlives the page.
    this.whenLoaded = this._load().catch((error) => {
      console.warn(`collab: ${name} is not kept in this browser:`, error);
      this.persist = false;
      this._persistence?.destroy();
      this._persistence = null;
      this._outbox = null;
    });
    // Outbox writes wait for the outbox to be open, and run one after another.
    this._disk = this.whenLoaded;
    this.whenLoaded.then(() => {
      if (this._destroyed) return;
      this.loaded = true;
      this._openChannel();
      client._register(this);
      this.emit("status", []);
    });
  }

  // -- what a page shows ------------------------------------------------------

  /** Local edits not yet acknowledged (merged edits count one each). */
  get queued() {
    let n = 0;
    for (const e of this._pending) n += e.count;
    for (const entries of this._inFlight.values()) for (const e of entries) n += e.count;
    return n;
  }

  /** Every local edit is acknowledged: durably stored by the server. */
  get saved() {
    return this.queued === 0;
  }

  get destroyed() {
    return this._destroyed;
  }

  get readOnly() {
    return this.role === "read";
  }

  /** A snapshot for a connection indicator. */
  get status() {
    return {
      connection: this.client.state,
      synced: this.synced,
      queued: this.queued,
      saved: this.saved,
      rttMs: this.client.rttMs,
      role: this.role,
      progress: this.syncProgress,
      error: this.error,
    };
  }

  /** Resolves once the outbox writes asked for so far are done (the edits made so far
   * survive closing the tab). */
  whenPersisted() {
    return this._disk.then(() => undefined);
  }

  /** Resolves once every local edit made so far is acknowledged. */
  whenSaved() {
    if (this.saved) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (saved) => {
        if (saved) {
          this.off("saved", check);
          resolve();
        }
      };
      this.on("saved", check);
    });
  }

  destroy() {
    if (this._destroyed) return;
    this._destroyed = true;
    this._pageHide();
    clearTimeout(this._retry);
    clearTimeout(this._flushTimer);
    this._writeMeta();
    this.client._unregister(this);
    globalThis.removeEventListener?.("pagehide", this._onPageHide);
    globalThis.removeEventListener?.("pageshow", this._onPageShow);
    this._unbind();
    this._channel?.close();
    this._persistence?.destroy();
    this.awareness.destroy();
    super.destroy();
  }

  // -- loading ----------------------------------------------------------------

  async _load() {
    if (!this.persist) return;
    const [db] = await Promise.all([openOutboxDatabase(), tabAlive]);
    this._outbox = new Outbox(db, this.name, TAB_ID);
    const meta = await this._outbox.meta();
    if (meta !== null) {
      this.epoch = meta.epoch;
      this.seq = meta.seq;
    }
    await this._openStore(this.epoch);
    // Adopt the edits of tabs that are gone (closed while offline): they are this
    // tab's to deliver now. Entries of live tabs stay theirs.
    const live = await liveOwners();
    const orphans = (await this._outbox.entries()).filter((e) => e.owner !== TAB_ID && live !== null && !live.has(e.owner));
    if (orphans.length > 0) {
      const adopted = orphans.map((e) => ({ owner: TAB_ID, n: ++this._n, epoch: e.epoch, update: e.update, count: e.count ?? 1 }));
      await this._outbox.replace(orphans, adopted);
      this._pending.unshift(...adopted);
      // The outbox is a second copy of the unsaved edits: should the document's own
      // store have missed the last of them (a tab closed mid-write), they are back.
      const mine = adopted.filter((e) => e.epoch === this.epoch || e.epoch === null);
      if (mine.length > 0) Y.applyUpdate(this.doc, Y.mergeUpdates(mine.map((e) => e.update)), this._diskOrigin);
    }
  }

  /** Each generation of a document has a database of its own, so that a tab that
   * moves to a new one never deletes what another tab still writes to. */
  _dbName(epoch) {
    return epoch === null ? `collab:${this.name}` : `collab:${this.name}@${epoch}`;
  }

  /** Opens the y-indexeddb store of `epoch` for `doc`; resolves once loaded. */
  _openStore(epoch) {
    const persistence = new IndexeddbPersistence(this._dbName(epoch), this.doc);
    this._persistence = persistence;
    this._storeEpoch = epoch;
    return persistence.whenSynced.then(() => {
      // Another tab deleting this database (it moved to a new generation first)
      // closes it: stop writing to it instead of failing on every edit.
      persistence.db.onversionchange = () => {
        persistence.db.close();
        if (this._persistence === persistence) {
          persistence.destroy();
          this._persistence = null;
        }
      };
    });
  }

  /** Moves `doc` to the store of `epoch` (the first sync tells the epoch; a reset
   * changes it), then deletes the store it was in. */
  _moveStore(epoch, doc) {
    const old = this._persistence;
    const oldName = this._dbName(this._storeEpoch);
    this._storeEpoch = epoch;
    if (old !== null) old.destroy();
    this._persistence = null;
    this._queueDisk(async () => {
      if (this._destroyed || this.doc !== doc) return;
      await this._openStore(epoch); // it stores the whole document on opening
      if (oldName !== this._dbName(epoch)) await deleteDB(oldName);
    });
  }

  _bind() {
    this.doc.on("update", this._onDocUpdate);
    this.awareness.on("update", this._onAwarenessUpdate);
  }

  _unbind() {
    this.doc.off("update", this._onDocUpdate);
    this.awareness.off("update", this._onAwarenessUpdate);
  }

  _queueDisk(work) {
    if (!this.persist) return;
    // (`_outbox` is read when the work runs: after loading, or never if loading failed.)
    this._disk = this._disk.then(() => (this._outbox === null ? undefined : work())).catch((error) => console.error("collab: outbox:", error));
  }

  _writeMeta() {
    clearTimeout(this._metaTimer);
    this._metaTimer = null;
    if (this.epoch === null) return;
    const { epoch, seq } = this;
    this._queueDisk(() => this._outbox.setMeta(epoch, seq));
  }

  _metaSoon() {
    if (this._metaTimer === null) this._metaTimer = setTimeout(() => this._writeMeta(), 250);
  }

  // -- local edits ------------------------------------------------------------

  _docUpdate(update, origin) {
    if (origin === this._bcOrigin || origin === this._persistence || origin === this._diskOrigin) return;
    if (origin === this) {
      // A remote edit from the server: other tabs may be offline or behind.
      if (!this._applyingSync) this._post({ type: "update", epoch: this.epoch, update });
      return;
    }
    this._post({ type: "update", epoch: this.epoch, update });
    const entry = { owner: TAB_ID, n: ++this._n, epoch: this.epoch, update, count: 1 };
    this._pending.push(entry);
    this._queueDisk(() => this._outbox.put(entry));
    if (this._pending.length > MAX_PENDING_ENTRIES) this._mergePending();
    const wasSaved = this.queued === 1;
    this._flush();
    if (wasSaved) this.emit("saved", [false]);
    this.emit("status", []);
  }

  /** Merges the unsent edits into one entry, on disk too: the outbox stays small. */
  _mergePending() {
    const old = this._pending;
    const merged = {
      owner: TAB_ID,
      n: ++this._n,
      epoch: this.epoch,
      update: Y.mergeUpdates(old.map((e) => e.update)),
      count: old.reduce((n, e) => n + e.count, 0),
    };
    this._pending = [merged];
    this._queueDisk(() => this._outbox.replace(old, [merged]));
  }

  _flush() {
    if (!this.synced || this.role !== "write" || this._pending.length === 0) return;
    if (this._inFlight.size >= MAX_IN_FLIGHT) return;
    const entries = this._pending;
    this._pending = [];
    const update = entries.length === 1 ? entries[0].update : Y.mergeUpdates(entries.map((e) => e.update));
    this._sendUpdate(update, entries);
  }

  _sendUpdate(update, entries) {
    this._ref = (this._ref + 1) % 0x7fffffff;
    this._inFlight.set(this._ref, entries);
    if (!this.client.send({ type: "update", doc: this.name, ref: this._ref, update })) {
      this._inFlight.delete(this._ref);
      this._pending.unshift(...entries);
    }
  }

  _refuse(entries) {
    this.refused.push(...entries);
    if (this.refused.length > MAX_REFUSED) this.refused.splice(0, this.refused.length - MAX_REFUSED);
    this._acknowledged(entries);
  }

  _acknowledged(entries) {
    this._queueDisk(() => this._outbox.remove(entries));
    if (this.saved) this.emit("saved", [true]);
  }

  // -- the server -------------------------------------------------------------

  _subscribe() {
    if (!this.loaded || this._destroyed || this.error !== null) return;
    if (this.client._isLeaving(this.name)) return; // subscribes on `unsubscribed`
    clearTimeout(this._retry);
    this._retry = null;
    this._parts = null;
    this._early = [];
    this._earlyBytes = 0;
    const message = { type: "subscribe", doc: this.name, sv: Y.encodeStateVector(this.doc) };
    if (this.epoch !== null) {
      message.epoch = this.epoch;
      message.seq = this.seq;
    }
    this.client.send(message);
  }

  _connectionChanged() {
    if (this.client.online) return; // `_subscribe` follows the welcome
    this.synced = false;
    this.syncProgress = null;
    this._parts = null;
    // Sent, never acknowledged: the sync after the next connection covers them.
    const unacked = [...this._inFlight.values()].flat();
    this._inFlight.clear();
    this._pending.unshift(...unacked);
    // Peers seen through the server are no longer known to be there; the tabs of
    // this browser still are.
    const gone = [...this.awareness.getStates().keys()].filter(
      (id) => id !== this.doc.clientID && !this._bcClients.has(id),
    );
    if (gone.length > 0) removeAwarenessStates(this.awareness, gone, this);
    this.emit("synced", [false]);
    this.emit("status", []);
  }

  _receive(m) {
    switch (m.type) {
      case "sync":
        this._sync(m);
        return;
      case "update":
        if (!(m.update instanceof Uint8Array) || typeof m.seq !== "number") return;
        if (this._parts !== null) {
          this._earlyBytes += m.update.length;
          if (this._earlyBytes > MAX_EARLY_BYTES) {
            // Too much arrives while a huge sync is read: start over from what we have.
            this._resubscribeLater(0, true);
            return;
          }
          this._early.push(m);
          return;
        }
        this._remoteUpdate(m);
        return;
      case "ack": {
        const entries = this._inFlight.get(m.ref);
        if (typeof m.seq === "number" && m.seq > this.seq) this.seq = m.seq;
        this._metaSoon();
        if (entries === undefined) return;
        this._inFlight.delete(m.ref);
        this._acknowledged(entries);
        this._flush();
        this.emit("status", []);
        return;
      }
      case "awareness":
        if (m.update instanceof Uint8Array) {
          try {
            applyAwarenessUpdate(this.awareness, m.update, this);
          } catch (error) {
            console.info("collab: ignoring an awareness update:", error);
          }
        }
        return;
      case "error":
        this._error(m);
        return;
      default:
        return;
    }
  }

  _remoteUpdate(m) {
    if (m.seq <= this.seq) return; // in the sync already
    Y.applyUpdate(this.doc, m.update, this);
    this.seq = m.seq;
    this._metaSoon();
  }

  _sync(m) {
    if (typeof m.epoch !== "string" || typeof m.seq !== "number" || !(m.update instanceof Uint8Array)) return;
    let update = m.update;
    if (typeof m.parts === "number" && m.parts > 1) {
      if (m.part === 0 || this._parts === null) this._parts = { chunks: [], bytes: 0 };
      this._parts.chunks.push(m.update);
      this._parts.bytes += m.update.length;
      const total = typeof m.total_bytes === "number" ? m.total_bytes : this._parts.bytes;
      this.syncProgress = { received: this._parts.bytes, total };
      this.emit("progress", [this.syncProgress]);
      this.emit("status", []);
      if (m.part < m.parts - 1) return;
      update = concat(this._parts.chunks, this._parts.bytes);
      this._parts = null;
    }
    this.syncProgress = null;
    if (m.mode === "reset" || (this.epoch !== null && m.epoch !== this.epoch)) {
      this._reset(m, update);
    } else {
      this._applyingSync = true;
      try {
        Y.applyUpdate(this.doc, update, this);
      } finally {
        this._applyingSync = false;
      }
    }
    this.epoch = m.epoch;
    this.seq = m.seq;
    if (this.persist && this._storeEpoch !== m.epoch) this._moveStore(m.epoch, this.doc);
    this.role = m.role === "read" ? "read" : "write";
    this.syncMode = m.mode ?? null;
    this.syncParts = typeof m.parts === "number" ? m.parts : 1;
    const early = this._early;
    this._early = [];
    this._earlyBytes = 0;
    for (const u of early) this._remoteUpdate(u);
    this.synced = true;
    this._writeMeta();

    // What the server lacks (every unacknowledged edit among it), as one update.
    const entries = [...this._inFlight.values()].flat().concat(this._pending);
    this._inFlight.clear();
    this._pending = [];
    if (this.role === "write" && m.sv instanceof Uint8Array) {
      const missing = Y.encodeStateAsUpdate(this.doc, m.sv);
      if (!isEmptyUpdate(missing)) this._sendUpdate(missing, entries);
      else this._acknowledged(entries);
    } else if (entries.length > 0) {
      // Read-only: the server refuses edits; they stay in this browser only.
      this._refuse(entries);
      this.emit("error", [{ code: "read_only", message: "this document is read-only for you: local edits were not sent" }]);
    }
    const local = this.awareness.getLocalState();
    if (local !== null) {
      this.client.send({ type: "awareness", doc: this.name, update: encodeAwarenessUpdate(this.awareness, [this.doc.clientID]) });
    }
    this.emit("synced", [true]);
    this.emit("status", []);
  }

  /** The server's document is another generation: drop the copy, take the server's. */
  _reset(m, update) {
    const oldDoc = this.doc;
    const dropped = [...this._inFlight.values()].flat().concat(this._pending);
    const droppedEdits = dropped.reduce((n, e) => n + e.count, 0);
    this._inFlight.clear();
    this._pending = [];
    const local = this.awareness.getLocalState();
    if (local !== null) removeAwarenessStates(this.awareness, [oldDoc.clientID], "local");
    this._unbind();
    this.awareness.destroy();
    const doc = new Y.Doc();
    Y.applyUpdate(doc, update, this);
    this.doc = doc;
    this.awareness = new Awareness(doc);
    if (local !== null) this.awareness.setLocalState(local);
    this._bind();
    this.resets += 1;
    this._bcClients.clear();
    if (this.persist) {
      this._queueDisk(() => this._outbox.clear());
      this._moveStore(m.epoch, doc);
    }
    oldDoc.destroy();
    if (droppedEdits > 0) {
      console.warn(`collab: ${this.name} was recreated on the server; ${droppedEdits} unsaved edits of the old copy were dropped`);
    }
    this.emit("reset", [{ doc, awareness: this.awareness, dropped: droppedEdits }]);
  }

  _error(m) {
    const entries = typeof m.ref === "number" ? this._inFlight.get(m.ref) : undefined;
    if (entries !== undefined) this._inFlight.delete(m.ref);
    switch (m.code) {
      case "overloaded":
        if (entries !== undefined) {
          // Not applied: keep it and send it again after a pause.
          this._pending.unshift(...entries);
          clearTimeout(this._flushTimer);
          this._flushTimer = setTimeout(() => this._flush(), RETRY_MS);
        }
        break;
      case "invalid_update":
      case "read_only":
        if (entries !== undefined) this._refuse(entries);
        this.emit("error", [m]);
        break;
      case "load_failed":
        // The subscription is dropped (the document could not be loaded, or was
        // deleted): subscribe again after a pause; a new epoch means a reset.
        if (entries !== undefined) this._pending.unshift(...entries);
        this._resubscribeLater(RETRY_MS * (0.5 + Math.random()), false);
        break;
      case "not_subscribed":
        // The server lost this subscription: an update it names was not applied.
        if (entries !== undefined) this._pending.unshift(...entries);
        if (this._retry === null && this.client.online) this._resubscribeLater(0, false);
        break;
      case "already_subscribed":
        // The server still holds a subscription this provider does not know of:
        // end it, then subscribe afresh.
        if (!this.synced) this._resubscribeLater(RETRY_MS, true);
        break;
      default:
        // forbidden, invalid_document_name, too_many_documents, invalid_state_vector
        this.error = m;
        this.emit("error", [m]);
        break;
    }
    this.emit("status", []);
  }

  _resubscribeLater(delayMs, unsubscribeFirst) {
    this.synced = false;
    this._parts = null;
    this._early = [];
    this._earlyBytes = 0;
    clearTimeout(this._retry);
    this._retry = setTimeout(() => {
      this._retry = null;
      if (!this.client.online) return; // the next connection subscribes anyway
      if (unsubscribeFirst) this.client._leave(this.name); // `unsubscribed` subscribes
      this._subscribe();
    }, delayMs);
  }

  // -- awareness --------------------------------------------------------------

  _awarenessUpdate({ added, updated, removed }, origin) {
    if (origin === this._bcOrigin) {
      for (const id of added.concat(updated)) this._bcClients.add(id);
      for (const id of removed) this._bcClients.delete(id);
      return;
    }
    if (origin !== "local") return;
    const changed = added.concat(updated, removed);
    const update = encodeAwarenessUpdate(this.awareness, changed);
    if (this.synced) this.client.send({ type: "awareness", doc: this.name, update });
    this._post({ type: "awareness", update });
  }

  _pageHide() {
    // A closing tab takes its cursor away at once, for the server's peers and for
    // this browser's other tabs.
    const state = this.awareness.getLocalState();
    if (state === null) return;
    this._hiddenState = state;
    removeAwarenessStates(this.awareness, [this.doc.clientID], "local");
  }

  _pageShow(event) {
    if (event.persisted && this._hiddenState !== null && !this._destroyed) {
      this.awareness.setLocalState(this._hiddenState);
      this._hiddenState = null;
    }
  }

  // -- other tabs -------------------------------------------------------------

  _openChannel() {
    if (typeof BroadcastChannel === "undefined") return;
    this._channel = new BroadcastChannel(`collab:${this.name}`);
    this._channel.onmessage = (event) => this._fromTab(event.data);
    // Ask the tabs open already for what this copy lacks, and for their presence.
    this._post({ type: "query", from: TAB_ID, epoch: this.epoch, sv: Y.encodeStateVector(this.doc) });
  }

  _post(message) {
    if (this._channel === null) return;
    try {
      this._channel.postMessage(message);
    } catch (error) {
      console.info("collab: cannot post to the other tabs:", error);
    }
  }

  _fromTab(m) {
    if (m === null || typeof m !== "object") return;
    try {
      switch (m.type) {
        case "update":
          // A copy of another generation must not be merged in (see `reset`).
          if (m.epoch != null && this.epoch !== null && m.epoch !== this.epoch) return;
          if (m.update instanceof Uint8Array) Y.applyUpdate(this.doc, m.update, this._bcOrigin);
          return;
        case "awareness":
          if (m.update instanceof Uint8Array) applyAwarenessUpdate(this.awareness, m.update, this._bcOrigin);
          return;
        case "query":
          // A new tab: send what it lacks, and this copy's state vector, so that it
          // sends back what this one lacks.
          if (m.sv instanceof Uint8Array && (m.epoch == null || this.epoch === null || m.epoch === this.epoch)) {
            const update = Y.encodeStateAsUpdate(this.doc, m.sv);
            this._post({ type: "answer", to: m.from, epoch: this.epoch, update, sv: Y.encodeStateVector(this.doc) });
          }
          if (this.awareness.getLocalState() !== null) {
            this._post({ type: "awareness", update: encodeAwarenessUpdate(this.awareness, [this.doc.clientID]) });
          }
          return;
        case "answer": {
          if (m.to !== TAB_ID) return;
          if (m.epoch != null && this.epoch !== null && m.epoch !== this.epoch) return;
          if (!(m.update instanceof Uint8Array) || !(m.sv instanceof Uint8Array)) return;
          if (!isEmptyUpdate(m.update)) Y.applyUpdate(this.doc, m.update, this._bcOrigin);
          const missing = Y.encodeStateAsUpdate(this.doc, m.sv);
          if (!isEmptyUpdate(missing)) this._post({ type: "update", epoch: this.epoch, update: missing });
          return;
        }
        default:
          return;
      }
    } catch (error) {
      console.info("collab: ignoring a message from another tab:", error);
    }
  }
}
