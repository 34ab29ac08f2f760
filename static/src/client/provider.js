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
import { Sent } from "./client.js";
import { Outbox, holdLockUntil, holdTabLock, liveOwners, openOutboxDatabase, watchTabLock, withDocumentLock } from "./outbox.js";

/** This page's id: owner of the outbox entries it writes, holder of a Web Lock. */
export const TAB_ID =
  globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
const tabAlive = holdTabLock(TAB_ID);
// Per document, the outbox writes of this tab's last provider of it: a provider opened
// again in the same tab waits for them before it reads the outbox.
const lastDisk = new Map();

const MAX_IN_FLIGHT = 64; // updates sent and not yet acknowledged; later edits wait, merged
const MAX_PENDING_ENTRIES = 32; // unsent edits kept apart; past it they are merged into one
const MAX_EARLY_BYTES = 32 * 1024 * 1024; // updates arriving between the parts of a sync
const RETRY_MS = 1000; // after `overloaded` or `load_failed`
const MAX_REFUSED = 100; // refused edits kept for the page to inspect (the latest)
const FRAME_OVERHEAD_BYTES = 256; // an update message's fields besides the update and name

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
    this.oldCopy = null; // after a reset that dropped edits: {doc, dropped}
    this._gen = 0; // the local copy's generation within the epoch (a resync starts one)
    this._diverged = false; // the copy holds a refused edit until a resync replaces it
    this._fresh = false; // the next subscription takes the whole document (resync)
    this._others = new Map(); // owner -> unacknowledged edits of this browser's other tabs
    this._watching = new Set(); // other tabs whose end this provider waits for
    this._entryOwners = new Set(); // other tabs with outbox entries, when loading
    this._relay = false; // this tab passes the server's updates on to the other tabs
    this._watchAbort = new AbortController();
    this._postedQueued = 0;
    this._wasSaved = true;
    this._nameBytes = new TextEncoder().encode(name).length;
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
      for (const owner of this._entryOwners) this._watch(owner);
      // One tab of the document (a Web Lock's holder) passes the server's updates on
      // to the tabs that are offline or behind; the others do not repeat them.
      holdLockUntil(`collab-relay:${encodeURIComponent(name)}`, this._watchAbort.signal, () => {
        this._relay = true;
      });
      client._register(this);
      this._queuedChanged();
    });
  }

  // -- what a page shows ------------------------------------------------------

  /** Edits of this document made in this browser (this tab and the others) not yet
   * acknowledged; merged edits count one each. */
  get queued() {
    let n = this.ownQueued;
    for (const count of this._others.values()) n += count;
    return n;
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
    this._watchAbort.abort();
    // This tab's unacknowledged edits stay in the outbox: another tab of the document
    // (or this one, opening it again) sends them.
    if (this.ownQueued > 0) this._post({ type: "released", from: TAB_ID });
    clearTimeout(this._retry);
    clearTimeout(this._flushTimer);
    this._writeMeta();
    this.client._unregister(this);
    if (this._outbox !== null && this._inFlight.size > 0) {
      // Acks still to come clear their entries from the outbox (else they would be
      // sent again by whichever tab adopts them).
      const inFlight = this._inFlight;
      this.client._afterLeaving(this.name, (m) => {
        const entries = inFlight.get(m.ref);
        if (entries === undefined) return;
        inFlight.delete(m.ref);
        this._queueDisk(() => this._outbox.remove(entries));
        lastDisk.set(this.name, this._disk);
      });
    }
    if (this.persist) lastDisk.set(this.name, this._disk);
    globalThis.removeEventListener?.("pagehide", this._onPageHide);
    globalThis.removeEventListener?.("pageshow", this._onPageShow);
    this._unbind();
    this._channel?.close();
    this._persistence?.destroy();
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
    const [db] = await Promise.all([openOutboxDatabase(), tabAlive, lastDisk.get(this.name)]);
    this._outbox = new Outbox(db, this.name, TAB_ID);
    const meta = await this._outbox.meta();
    if (meta !== null) {
      this.epoch = meta.epoch;
      this.seq = meta.seq;
      this._gen = meta.gen ?? 0;
    }
    await this._openStore(this.epoch);
    // Adopt the edits of tabs that are gone (closed while offline), and those this tab
    // left unacknowledged when it last had the document open: they are this
    // provider's to deliver now. Entries of other live tabs stay theirs.
    const live = await liveOwners();
    await this._adopt((e) => e.owner === TAB_ID || (live !== null && !live.has(e.owner)));
    // Tabs alive with edits of this document unsent: when one is closed, its edits
    // are this tab's to send.
    for (const e of await this._outbox.entries()) if (e.owner !== TAB_ID) this._entryOwners.add(e.owner);
  }

  /** Takes over the outbox entries `pick` selects: counted, sent and cleared by this
   * provider from now on. Tabs adopt one at a time (a Web Lock per document). */
  async _adopt(pick) {
    if (this._outbox === null) return;
    const adopted = await withDocumentLock(this.name, async () => {
      const all = await this._outbox.entries();
      for (const e of all) if (e.owner === TAB_ID) this._n = Math.max(this._n, e.n);
      const orphans = all.filter(pick);
      if (orphans.length === 0) return [];
      const mine = orphans.map((e) => ({ owner: TAB_ID, n: ++this._n, epoch: e.epoch, update: e.update, count: e.count ?? 1 }));
      await this._outbox.replace(orphans, mine);
      return mine;
    });
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

  /** Waits for the end of another tab of this document (its Web Lock released: the
   * tab was closed), then adopts what it left unsent. */
  _watch(owner) {
    if (typeof owner !== "string" || owner === TAB_ID || this._watching.has(owner) || this._outbox === null) return;
    this._watching.add(owner);
    watchTabLock(owner, this._watchAbort.signal, async () => {
      this._watching.delete(owner);
      this._others.delete(owner);
      if (!this._destroyed) await this._adopt((e) => e.owner === owner);
      this._queuedChanged();
    });
  }

  /** Each generation of a document has a database of its own, so that a tab that
   * moves to a new one never deletes what another tab still writes to. Both parts are
   * escaped: no name and epoch give the database of another document ("a@b" before its
   * first sync is not "a" at epoch "b"). */
  _dbName(epoch, gen = this._gen) {
    const name = `collab:${encodeURIComponent(this.name)}@${epoch === null ? "-" : encodeURIComponent(epoch)}`;
    return gen > 0 ? `${name}#${gen}` : name;
  }

  /** Opens the y-indexeddb store of `epoch` for `doc`; resolves once loaded. */
  _openStore(epoch) {
    const persistence = new IndexeddbPersistence(this._dbName(epoch, this._gen), this.doc);
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

  /** Moves `doc` to the store of `epoch` and generation `gen` (the first sync tells the
   * epoch; a reset changes it, a resync the generation), then deletes the store it was in. */
  _moveStore(epoch, doc, gen = 0) {
    const old = this._persistence;
    const oldName = this._dbName(this._storeEpoch);
    this._storeEpoch = epoch;
    this._gen = gen;
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
    const gen = this._gen;
    this._queueDisk(() => this._outbox.setMeta(epoch, seq, gen));
  }

  _metaSoon() {
    if (this._metaTimer === null) this._metaTimer = setTimeout(() => this._writeMeta(), 250);
  }

  // -- local edits ------------------------------------------------------------

  _docUpdate(update, origin) {
    if (origin === this._bcOrigin || origin === this._persistence || origin === this._diskOrigin) return;
    if (origin === this) {
      // A remote edit from the server: other tabs may be offline or behind.
      if (this._relay && !this._applyingSync) this._post({ type: "update", epoch: this.epoch, update });
      return;
    }
    this._post({ type: "update", epoch: this.epoch, update });
    const entry = { owner: TAB_ID, n: ++this._n, epoch: this.epoch, update, count: 1 };
    this._pending.push(entry);
    this._queueDisk(() => this._outbox.put(entry));
    if (this._pending.length > MAX_PENDING_ENTRIES) this._mergePending();
    this._flush();
    this._queuedChanged();
  }

  /** Tells this browser's other tabs how many of this tab's edits are unacknowledged,
   * and the page whether everything is saved. */
  _queuedChanged() {
    const own = this.ownQueued;
    if (own !== this._postedQueued) {
      this._postedQueued = own;
      this._post({ type: "queued", from: TAB_ID, count: own });
    }
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
      merged.push({
        owner: TAB_ID,
        n: ++this._n,
        epoch: group[0].epoch,
        update: Y.mergeUpdates(group.map((e) => e.update)),
        count: group.reduce((c, e) => c + e.count, 0),
      });
    }
    if (merged.length === old.length) return;
    this._pending = merged;
    const removed = old.filter((e) => !merged.includes(e));
    const added = merged.filter((e) => !old.includes(e));
    this._queueDisk(() => this._outbox.replace(removed, added));
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
    this._queueDisk(() => this._outbox.remove(entries));
    this._diverged = true;
    this._queuedChanged();
    this.emit("error", [error]);
    this._post({ type: "resync", from: TAB_ID });
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
    this._queueDisk(() => this._outbox.remove(entries));
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
    if (this.persist && this._storeEpoch !== m.epoch) this._moveStore(m.epoch, this.doc, 0);
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
    const local = this.awareness.getLocalState();
    if (local !== null) {
      this.client.send({ type: "awareness", doc: this.name, update: encodeAwarenessUpdate(this.awareness, [this.doc.clientID]) });
    }
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
    this._bcClients.clear();
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
    this._others.clear(); // the other tabs' entries go with the old generation
    const oldDoc = this._replaceDoc(update);
    this.resets += 1;
    if (this.persist) {
      this._queueDisk(() => this._outbox.clear());
      this._moveStore(m.epoch, this.doc, 0);
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
    if (this.persist) this._moveStore(m.epoch, this.doc, this._gen + 1);
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
    this._post({ type: "query", from: TAB_ID, epoch: this.epoch, sv: Y.encodeStateVector(this.doc), queued: this.ownQueued });
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
      if (typeof m.from === "string" && m.from !== TAB_ID) this._watch(m.from);
      switch (m.type) {
        case "queued":
          if (typeof m.from === "string" && typeof m.count === "number") {
            if (m.count > 0) this._others.set(m.from, m.count);
            else this._others.delete(m.from);
            this._queuedChanged();
          }
          return;
        case "released":
          // The tab left the document with edits unsent: they are this tab's now.
          this._others.delete(m.from);
          this._adopt((e) => e.owner === m.from).catch((error) => console.error("collab: outbox:", error));
          this._queuedChanged();
          return;
        case "resync":
          // Another tab's edit was refused; this copy holds it too.
          this._resync();
          return;
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
          if (typeof m.queued === "number" && m.queued > 0) this._others.set(m.from, m.queued);
          if (m.sv instanceof Uint8Array && (m.epoch == null || this.epoch === null || m.epoch === this.epoch)) {
            const update = Y.encodeStateAsUpdate(this.doc, m.sv);
            this._post({ type: "answer", to: m.from, from: TAB_ID, epoch: this.epoch, update, sv: Y.encodeStateVector(this.doc), queued: this.ownQueued });
          }
          this._queuedChanged();
          if (this.awareness.getLocalState() !== null) {
            this._post({ type: "awareness", update: encodeAwarenessUpdate(this.awareness, [this.doc.clientID]) });
          }
          return;
        case "answer": {
          if (m.to !== TAB_ID) return;
          if (typeof m.queued === "number" && m.queued > 0) {
            this._others.set(m.from, m.queued);
            this._queuedChanged();
          }
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
