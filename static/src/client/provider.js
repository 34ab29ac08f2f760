// A Yjs provider for one document over a CollabClient: the native protocol's sync,
// resume and reset (docs/PROTOCOL.md 1.4-1.5), acknowledged edits and awareness. The
// copy kept in IndexedDB with its outbox is persistence.js's; the tabs of one browser
// kept in step are tabs.js's. docs/CLIENT.md has the API.

import * as Y from "yjs";
import { Awareness, applyAwarenessUpdate, encodeAwarenessUpdate, removeAwarenessStates } from "y-protocols/awareness";
import { ObservableV2 } from "lib0/observable";
import { Sent } from "./client.js";
import { LocalCopy } from "./persistence.js";
import { DocumentTabs, TAB_ID, isEmptyUpdate, liveOwners } from "./tabs.js";

const MAX_IN_FLIGHT = 64; // updates sent and not yet acknowledged; later edits wait, merged
const MAX_PENDING_ENTRIES = 32; // unsent edits kept apart; past it they are merged into one
const MAX_EARLY_BYTES = 32 * 1024 * 1024; // updates arriving between the parts of a sync
const RETRY_MS = 1000; // after `overloaded` or `load_failed`
const MAX_REFUSED = 100; // refused edits kept for the page to inspect (the latest)
// Presence changes are sent at most this often, the latest state of each (a cursor
// moved 60 times a second would pass the server's 30 a second and be dropped).
const AWARENESS_INTERVAL_MS = 50;
const FRAME_OVERHEAD_BYTES = 256; // an update message's fields besides the update and name

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
 * - `reset` ({doc, awareness, dropped, oldDoc, reason}): the provider now holds a new
 *   Y.Doc and Awareness, rebind the editor to them. `reason` "epoch": the server's
 *   document has another epoch; `oldDoc` is the copy it replaced when it held `dropped`
 *   unacknowledged edits (else null). `reason` "resync": an edit was refused and the
 *   copy was taken afresh from the server.
 * - `error` (error): the server refused the document or an edit ({code, message});
 *   an edit refused for good ("read_only", "invalid_update", "too_large") is not
 *   saved: the copy is then taken afresh from the server (`reset`, reason "resync")
 */
export class DocumentProvider extends ObservableV2 {
  constructor(client, name, options = {}) {
    super();
    this.client = client;
    this.name = name;
    this.doc = options.doc ?? new Y.Doc();
    this.awareness = new Awareness(this.doc);
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
    this.oldCopy = null; // after a reset that dropped edits: {doc, dropped}
    this._diverged = false; // the copy holds a refused edit until a resync replaces it
    this._fresh = false; // the next subscription takes the whole document (resync)
    this._entryOwners = new Set(); // other tabs with outbox entries, when loading
    this._wasSaved = true;
    this._nameBytes = new TextEncoder().encode(name).length;
    this._pending = []; // outbox entries not sent: {owner, n, epoch, update, count}
    this._inFlight = new Map(); // ref -> entries covered by that update
    this._ref = 0;
    this._parts = null;
    this._early = [];
    this._earlyBytes = 0;
    this._retry = null;
    this._flushTimer = null;
    this._hiddenState = null;
    this._metaTimer = null;
    this._local = new LocalCopy(name, options.persist ?? typeof indexedDB !== "undefined");
    this._tabs = new DocumentTabs(this);
    this._diskOrigin = { outbox: name };
    this._destroyed = false;

    this._onDocUpdate = (update, origin) => this._docUpdate(update, origin);
    this._onAwarenessUpdate = (changes, origin) => this._awarenessUpdate(changes, origin);
    this._awarenessChanged = new Set(); // client ids whose change waits for the interval
    this._awarenessTimer = null;
    this._awarenessSentAt = 0;
    this._onPageHide = () => this._pageHide();
    this._onPageShow = (event) => this._pageShow(event);
    this._bind();
    globalThis.addEventListener?.("pagehide", this._onPageHide);
    globalThis.addEventListener?.("pageshow", this._onPageShow);

    // Without IndexedDB (a private window may refuse it) the provider still works,
    // only nothing outlives the page.
    this.whenLoaded = this._load().catch((error) => {
      console.warn(`collab: ${name} is not kept in this browser:`, error);
      this._local.disable();
    });
    // Outbox writes wait for the outbox to be open, and run one after another.
    this._local.disk = this.whenLoaded;
    this.whenLoaded.then(() => {
      if (this._destroyed) return;
      this.loaded = true;
      this._tabs.open(this._entryOwners);
      client._register(this);
      this._queuedChanged();
    });
  }

  // -- what a page shows ------------------------------------------------------

  /** Edits of this document made in this browser (this tab and the others) not yet
   * acknowledged; merged edits count one each. */
  get queued() {
    return this.ownQueued + this._tabs.queued;
  }

  /** This tab's edits not yet acknowledged (this tab sends them). */
  get ownQueued() {
    let n = 0;
    for (const e of this._pending) n += e.count;
    for (const entries of this._inFlight.values()) for (const e of entries) n += e.count;
    return n;
  }

  /** Every edit of the document made in this browser is acknowledged (durably stored
   * by the server), and the copy holds no edit the server refused. */
  get saved() {
    return this.queued === 0 && !this._diverged;
  }

  get destroyed() {
    return this._destroyed;
  }

  /** The document and its outbox are kept in IndexedDB (the `persist` option, unless
   * IndexedDB failed). */
  get persist() {
    return this._local.enabled;
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
      refused: this._diverged,
      rttMs: this.client.rttMs,
      role: this.role,
      progress: this.syncProgress,
      error: this.error,
    };
  }

  /** Resolves once the outbox writes asked for so far are done (the edits made so far
   * survive closing the tab). */
  whenPersisted() {
    return this._local.disk.then(() => undefined);
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
    // This tab's unacknowledged edits stay in the outbox: another tab of the document
    // (or this one, opening it again) sends them.
    this._tabs.close(this.ownQueued);
    clearTimeout(this._retry);
    clearTimeout(this._flushTimer);
    clearTimeout(this._awarenessTimer);
    this._writeMeta();
    this.client._unregister(this);
    if (this._canAdopt() && this._inFlight.size > 0) {
      // Acks still to come clear their entries from the outbox (else they would be
      // sent again by whichever tab adopts them).
      const inFlight = this._inFlight;
      this.client._afterLeaving(this.name, (m) => {
        const entries = inFlight.get(m.ref);
        if (entries === undefined) return;
        inFlight.delete(m.ref);
        this._local.queue((outbox) => outbox.remove(entries));
        this._local.handOver();
      });
    }
    if (this.persist) this._local.handOver();
    globalThis.removeEventListener?.("pagehide", this._onPageHide);
    globalThis.removeEventListener?.("pageshow", this._onPageShow);
    this._unbind();
    this._local.close();
    this.awareness.destroy();
    this.oldCopy?.doc.destroy();
    super.destroy();
  }

  /** Forgets the copy kept after a reset (`oldCopy`). */
  dismissOldCopy() {
    this.oldCopy?.doc.destroy();
    this.oldCopy = null;
    this.emit("status", []);
  }

  // -- loading ----------------------------------------------------------------

  async _load() {
    if (!this.persist) return;
    const meta = await this._local.open();
    if (meta !== null) {
      this.epoch = meta.epoch;
      this.seq = meta.seq;
    }
    await this._local.openStore(this.epoch, this.doc);
    // Adopt the edits of tabs that are gone (closed while offline), and those this tab
    // left unacknowledged when it last had the document open: they are this
    // provider's to deliver now. Entries of other live tabs stay theirs.
    const live = await liveOwners();
    await this._adopt((e) => e.owner === TAB_ID || (live !== null && !live.has(e.owner)));
    // Tabs alive with edits of this document unsent: when one is closed, its edits
    // are this tab's to send.
    this._entryOwners = await this._local.otherOwners();
  }

  /** There is an outbox to adopt other tabs' entries from. */
  _canAdopt() {
    return this._local.outbox !== null;
  }

  /** Takes over the outbox entries `pick` selects: counted, sent and cleared by this
   * provider from now on. */
  async _adopt(pick) {
    if (!this._canAdopt()) return;
    const adopted = await this._local.adopt(pick);
    if (adopted.length === 0 || this._destroyed) return;
    this._pending.unshift(...adopted);
    // The outbox is a second copy of the unsaved edits: should the document's own
    // store have missed the last of them (a tab closed mid-write), they are back.
    const same = adopted.filter((e) => e.epoch === this.epoch || e.epoch === null);
    if (same.length > 0) Y.applyUpdate(this.doc, Y.mergeUpdates(same.map((e) => e.update)), this._diskOrigin);
    if (this.loaded) {
      this._flush();
      this._queuedChanged();
    }
  }

  _bind() {
    this.doc.on("update", this._onDocUpdate);
    this.awareness.on("update", this._onAwarenessUpdate);
  }

  _unbind() {
    this.doc.off("update", this._onDocUpdate);
    this.awareness.off("update", this._onAwarenessUpdate);
    // Changes of this Awareness not sent yet go with it (the next one announces the state).
    clearTimeout(this._awarenessTimer);
    this._awarenessTimer = null;
    this._awarenessChanged.clear();
  }

  _writeMeta() {
    clearTimeout(this._metaTimer);
    this._metaTimer = null;
    if (this.epoch === null) return;
    this._local.writeMeta(this.epoch, this.seq);
  }

  _metaSoon() {
    if (this._metaTimer === null) this._metaTimer = setTimeout(() => this._writeMeta(), 250);
  }

  // -- local edits ------------------------------------------------------------

  _docUpdate(update, origin) {
    // (Without a store, `store` is null: so is the origin of a plain `doc.transact`.)
    const store = this._local.store;
    if (origin === this._tabs.origin || (store !== null && origin === store) || origin === this._diskOrigin) return;
    if (origin === this) {
      // A remote edit from the server: other tabs may be offline or behind.
      if (this._tabs.relay && !this._applyingSync) this._tabs.sendUpdate(update);
      return;
    }
    this._tabs.sendUpdate(update);
    const entry = this._local.entry(this.epoch, update);
    this._pending.push(entry);
    this._local.queue((outbox) => outbox.put(entry));
    if (this._pending.length > MAX_PENDING_ENTRIES) this._mergePending();
    this._flush();
    this._queuedChanged();
  }

  /** Tells this browser's other tabs how many of this tab's edits are unacknowledged,
   * and the page whether everything is saved. */
  _queuedChanged() {
    this._tabs.announceQueued(this.ownQueued);
    const saved = this.saved;
    if (saved !== this._wasSaved) {
      this._wasSaved = saved;
      this.emit("saved", [saved]);
    }
    this.emit("status", []);
  }

  /** The largest update one message to the server may carry. */
  _updateBudget() {
    return this.client.maxFrameBytes - FRAME_OVERHEAD_BYTES - this._nameBytes;
  }

  /** The first entries of `entries` that fit in one message merged (at least one). */
  _batch(entries) {
    const budget = this._updateBudget();
    let bytes = 0;
    let n = 0;
    while (n < entries.length && entries[n].epoch === entries[0].epoch) {
      if (n > 0 && bytes + entries[n].update.length > budget) break;
      bytes += entries[n].update.length;
      n += 1;
    }
    return n;
  }

  /** Merges runs of unsent edits, on disk too, so that the outbox stays small; never
   * past what one message to the server may carry. */
  _mergePending() {
    const old = this._pending;
    const merged = [];
    for (let at = 0; at < old.length; ) {
      const n = this._batch(old.slice(at));
      const group = old.slice(at, at + n);
      at += n;
      if (group.length === 1) {
        merged.push(group[0]);
        continue;
      }
      merged.push(
        this._local.entry(
          group[0].epoch,
          Y.mergeUpdates(group.map((e) => e.update)),
          group.reduce((c, e) => c + e.count, 0),
        ),
      );
    }
    if (merged.length === old.length) return;
    this._pending = merged;
    const removed = old.filter((e) => !merged.includes(e));
    const added = merged.filter((e) => !old.includes(e));
    this._local.queue((outbox) => outbox.replace(removed, added));
  }

  _flush() {
    if (!this.synced || this.role !== "write") return;
    while (this._pending.length > 0 && this._inFlight.size < MAX_IN_FLIGHT) {
      const entries = this._pending.splice(0, this._batch(this._pending));
      const update = entries.length === 1 ? entries[0].update : Y.mergeUpdates(entries.map((e) => e.update));
      if (!this._sendUpdate(update, entries)) return;
    }
  }

  /** Sends `update`, which covers `entries`; false when not online (they are pending
   * again). An update larger than the server accepts is sent as its entries one by
   * one; a single edit that large is refused here: the server would close the
   * connection (1009) on it, and again after every reconnection. */
  _sendUpdate(update, entries) {
    this._ref = (this._ref + 1) % 0x7fffffff;
    const ref = this._ref;
    this._inFlight.set(ref, entries);
    const sent = this.client.trySend({ type: "update", doc: this.name, ref, update });
    if (sent === Sent.SENT) return true;
    this._inFlight.delete(ref);
    if (sent === Sent.NOT_ONLINE) {
      this._pending.unshift(...entries);
      return false;
    }
    if (entries.length > 1 || (entries.length === 1 && entries[0].update !== update)) {
      for (let i = 0; i < entries.length; i++) {
        if (!this._sendUpdate(entries[i].update, [entries[i]])) {
          this._pending.splice(1, 0, ...entries.slice(i + 1));
          return false;
        }
      }
      return true;
    }
    // What the server lacks beyond this tab's edits is other tabs' to send.
    if (entries.length === 0) return true;
    const mib = (bytes) => (bytes / 1048576).toFixed(1);
    this._refuse(entries, {
      code: "too_large",
      message: `An edit of ${mib(update.length)} MiB is larger than the server accepts (${mib(this.client.maxFrameBytes)} MiB): it was not saved and has been undone.`,
    });
    return true;
  }

  /** `entries` will never be stored: they leave the outbox, the page is told, and the
   * copy (which holds them) is taken afresh from the server. */
  _refuse(entries, error) {
    this.refused.push(...entries);
    if (this.refused.length > MAX_REFUSED) this.refused.splice(0, this.refused.length - MAX_REFUSED);
    this._local.queue((outbox) => outbox.remove(entries));
    this._diverged = true;
    this._queuedChanged();
    this.emit("error", [error]);
    this._tabs.askResync();
    this._resync();
  }

  /** Takes the whole document afresh from the server at the next subscription (now,
   * when online), replacing the copy; unacknowledged edits not refused are kept. */
  _resync() {
    this._diverged = true;
    this._fresh = true;
    if (this.client.online && this.loaded && !this._destroyed) this._resubscribeLater(0, true);
    this._queuedChanged();
  }

  _acknowledged(entries) {
    this._local.queue((outbox) => outbox.remove(entries));
    this._queuedChanged();
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
    // A resync asks for the whole document (an empty state vector, no seq).
    const message = { type: "subscribe", doc: this.name, sv: this._fresh ? new Uint8Array([0]) : Y.encodeStateVector(this.doc) };
    if (this.epoch !== null) {
      message.epoch = this.epoch;
      if (!this._fresh) message.seq = this.seq;
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
      (id) => id !== this.doc.clientID && !this._tabs.clients.has(id),
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
    } else if (this._fresh) {
      this._resynced(m, update);
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
    if (this.persist && this._local.storeEpoch !== m.epoch) this._local.moveStore(m.epoch, this.doc, 0);
    this.role = m.role === "read" ? "read" : "write";
    this.syncMode = m.mode ?? null;
    this.syncParts = typeof m.parts === "number" ? m.parts : 1;
    const early = this._early;
    this._early = [];
    this._earlyBytes = 0;
    for (const u of early) this._remoteUpdate(u);
    this.synced = true;
    this._writeMeta();

    // What the server lacks (every unacknowledged edit among it), as one update. When
    // it lacks nothing, the edits are sent anyway: only an ack says they are durable
    // (the server acknowledges an update it has with the seq that stored it).
    const entries = [...this._inFlight.values()].flat().concat(this._pending);
    this._inFlight.clear();
    this._pending = [];
    if (this.role === "write" && m.sv instanceof Uint8Array) {
      const missing = Y.encodeStateAsUpdate(this.doc, m.sv);
      if (!isEmptyUpdate(missing)) this._sendUpdate(missing, entries);
      else {
        this._pending = entries;
        this._flush();
      }
    } else if (entries.length > 0) {
      // Read-only: the server refuses edits.
      this._refuse(entries, { code: "read_only", message: "This document is read-only for you: your edits were not saved and have been undone." });
    }
    // Set again, with the next clock: the others took this client's state away when
    // its last connection ended, at the clock it had, and would keep ignoring it at
    // that clock (a client that reconnects for a new label, say, stayed invisible).
    const local = this.awareness.getLocalState();
    if (local !== null) this.awareness.setLocalState(local);
    this.emit("synced", [true]);
    this.emit("status", []);
  }

  /** Puts a new Y.Doc holding `update` (and a new Awareness) in place of the copy;
   * returns the old Y.Doc. */
  _replaceDoc(update) {
    const oldDoc = this.doc;
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
    this._tabs.clients.clear();
    return oldDoc;
  }

  /** The server's document is another generation: drop the copy, take the server's.
   * Unacknowledged edits cannot be merged into it (they belong to the old history):
   * the old copy holding them is kept as `oldCopy` for the page to offer. */
  _reset(m, update) {
    const dropped = [...this._inFlight.values()].flat().concat(this._pending);
    const droppedEdits = dropped.reduce((n, e) => n + e.count, 0);
    this._inFlight.clear();
    this._pending = [];
    this._fresh = false;
    this._diverged = false;
    this._tabs.forgetQueued(); // the other tabs' entries go with the old generation
    const oldDoc = this._replaceDoc(update);
    this.resets += 1;
    if (this.persist) {
      this._local.queue((outbox) => outbox.clear());
      this._local.moveStore(m.epoch, this.doc, 0);
    }
    this.oldCopy?.doc.destroy();
    this.oldCopy = null;
    if (droppedEdits > 0) this.oldCopy = { doc: oldDoc, dropped: droppedEdits };
    else oldDoc.destroy();
    this._queuedChanged();
    this.emit("reset", [{ doc: this.doc, awareness: this.awareness, dropped: droppedEdits, oldDoc: this.oldCopy?.doc ?? null, reason: "epoch" }]);
  }

  /** The whole document, asked for after a refusal: it replaces the copy (which holds
   * the refused edit); this tab's other unacknowledged edits are applied to it again
   * and sent. The copy kept in IndexedDB starts a new generation. */
  _resynced(m, update) {
    this._fresh = false;
    this._diverged = false;
    const oldDoc = this._replaceDoc(update);
    const keep = [...this._inFlight.values()].flat().concat(this._pending);
    const same = keep.filter((e) => e.epoch === m.epoch || e.epoch === null);
    if (same.length > 0) Y.applyUpdate(this.doc, Y.mergeUpdates(same.map((e) => e.update)), this._diskOrigin);
    if (this.persist) this._local.moveStore(m.epoch, this.doc, this._local.gen + 1);
    oldDoc.destroy();
    this.resets += 1;
    this.emit("reset", [{ doc: this.doc, awareness: this.awareness, dropped: 0, oldDoc: null, reason: "resync" }]);
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
        if (entries !== undefined) {
          const what = m.code === "read_only" ? "This document is read-only for you" : `The server refused an edit (${m.message})`;
          this._refuse(entries, { ...m, message: `${what}: it was not saved and has been undone.` });
        } else this.emit("error", [m]);
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
      case "awareness_limit":
      case "awareness_denied":
      case "invalid_awareness":
        // A presence update was dropped: the document and its edits are not affected.
        console.info(`collab: ${this.name}: ${m.message}`);
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
    if (origin === this._tabs.origin) {
      this._tabs.noteAwareness({ added, updated, removed });
      return;
    }
    if (origin !== "local") return;
    for (const id of added.concat(updated, removed)) this._awarenessChanged.add(id);
    // A removal (the tab closing, the user leaving) goes at once.
    if (removed.length > 0) return this._sendAwareness();
    if (this._awarenessTimer !== null) return;
    const wait = this._awarenessSentAt + AWARENESS_INTERVAL_MS - Date.now();
    if (wait <= 0) this._sendAwareness();
    else this._awarenessTimer = setTimeout(() => this._sendAwareness(), wait);
  }

  _sendAwareness() {
    clearTimeout(this._awarenessTimer);
    this._awarenessTimer = null;
    const changed = [...this._awarenessChanged].filter((id) => this.awareness.meta.has(id));
    this._awarenessChanged.clear();
    if (changed.length === 0) return;
    this._awarenessSentAt = Date.now();
    const update = encodeAwarenessUpdate(this.awareness, changed);
    if (this.synced) this.client.send({ type: "awareness", doc: this.name, update });
    this._tabs.sendAwareness(update);
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
}
