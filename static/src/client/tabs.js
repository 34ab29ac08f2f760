// The tabs of one browser: which are alive (each holds a Web Lock named after itself
// for its life), and, per document, a BroadcastChannel (`collab:<name>`) that keeps
// the tabs of that document in step, also while offline: local edits and presence go
// to the other tabs at once, each tab tells how many of its edits are unacknowledged,
// one tab passes the server's updates on, and a tab that is closed or leaves the
// document has its unsent edits adopted by another. docs/CLIENT.md describes it.

import * as Y from "yjs";
import { applyAwarenessUpdate, encodeAwarenessUpdate } from "y-protocols/awareness";

/** This page's id: owner of the outbox entries it writes, holder of a Web Lock. */
export const TAB_ID =
  globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;

export const isEmptyUpdate = (u) => u.length === 2 && u[0] === 0 && u[1] === 0;

// -- Web Locks ----------------------------------------------------------------

const LOCK_PREFIX = "collab-tab:";

/** Holds this tab's lock for the life of the page; returns once it is held. */
function holdTabLock(owner) {
  if (!globalThis.navigator?.locks) return Promise.resolve();
  return new Promise((resolve) => {
    navigator.locks.request(LOCK_PREFIX + owner, () => {
      resolve();
      return new Promise(() => {}); // released when the page goes away
    });
  });
}

/** Resolves once this tab holds its lock: other tabs see it alive. */
export const tabAlive = holdTabLock(TAB_ID);

/** The owners whose tabs are alive (null, meaning all of them, without Web Locks). */
export async function liveOwners() {
  if (!globalThis.navigator?.locks) return null;
  const { held } = await navigator.locks.query();
  return new Set(held.filter((l) => l.name.startsWith(LOCK_PREFIX)).map((l) => l.name.slice(LOCK_PREFIX.length)));
}

/** Calls `onGone` (holding its lock) once the tab `owner` is gone: its lock is
 * released when the page goes away. Nothing when `signal` aborts first. */
function watchTabLock(owner, signal, onGone) {
  if (!globalThis.navigator?.locks) return;
  navigator.locks.request(LOCK_PREFIX + owner, { signal }, () => onGone()).catch((error) => {
    if (error?.name !== "AbortError") console.error("collab: watching another tab:", error);
  });
}

/** Calls `onHeld` once this tab holds the lock `name`, which it then keeps until
 * `signal` aborts (or the page goes away). Without Web Locks, at once. */
function holdLockUntil(name, signal, onHeld) {
  if (!globalThis.navigator?.locks) {
    onHeld();
    return;
  }
  navigator.locks
    .request(name, { signal }, () => {
      onHeld();
      return new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
    })
    .catch((error) => {
      if (error?.name !== "AbortError") console.error("collab: holding a lock:", error);
    });
}

/** Runs `work` holding the document's outbox lock: tabs adopt entries one at a time. */
export function withDocumentLock(doc, work) {
  if (!globalThis.navigator?.locks) return work();
  return navigator.locks.request(`collab-outbox:${encodeURIComponent(doc)}`, () => work());
}

// -- one document's tabs ------------------------------------------------------

/**
 * The other tabs of this browser open on the document of `provider` (a
 * DocumentProvider), as seen from this tab. What it asks of the provider: its `doc`,
 * `awareness`, `epoch`, `ownQueued` and `destroyed`, and `_adopt(pick)` (take over
 * outbox entries), `_canAdopt()` (there is an outbox to adopt from), `_resync()` and
 * `_queuedChanged()`.
 */
export class DocumentTabs {
  constructor(provider) {
    this.provider = provider;
    this.origin = { broadcast: provider.name }; // of the edits and presence they bring
    this.clients = new Set(); // their awareness clients
    this.relay = false; // this tab passes the server's updates on to them
    this._channel = null;
    this._others = new Map(); // owner -> their unacknowledged edits of the document
    this._watching = new Set(); // tabs whose end this one waits for
    this._abort = new AbortController();
    this._postedQueued = 0;
  }

  /** The other tabs' edits of the document not yet acknowledged. */
  get queued() {
    let n = 0;
    for (const count of this._others.values()) n += count;
    return n;
  }

  /** Joins the document's channel once the copy is loaded; `owners`: other tabs that
   * left outbox entries of it, whose end this tab waits for. */
  open(owners) {
    if (typeof BroadcastChannel !== "undefined") {
      this._channel = new BroadcastChannel(`collab:${this.provider.name}`);
      this._channel.onmessage = (event) => this._receive(event.data);
      // Ask the tabs open already for what this copy lacks, and for their presence.
      const { provider } = this;
      this._post({ type: "query", from: TAB_ID, epoch: provider.epoch, sv: Y.encodeStateVector(provider.doc), queued: provider.ownQueued });
    }
    for (const owner of owners) this._watch(owner);
    // One tab of the document (the lock's holder) passes the server's updates on to
    // the tabs that are offline or behind; the others do not repeat them.
    holdLockUntil(`collab-relay:${encodeURIComponent(this.provider.name)}`, this._abort.signal, () => {
      this.relay = true;
    });
  }

  /** Leaves the channel; edits still unsent (`ownQueued`) are left to another tab. */
  close(ownQueued) {
    this._abort.abort();
    if (ownQueued > 0) this._post({ type: "released", from: TAB_ID });
    this._channel?.close();
  }

  /** A change of the document, local or from the server. */
  sendUpdate(update) {
    this._post({ type: "update", epoch: this.provider.epoch, update });
  }

  /** A change of this tab's presence. */
  sendAwareness(update) {
    this._post({ type: "awareness", update });
  }

  /** An edit was refused: every tab's copy holds it and is taken afresh. */
  askResync() {
    this._post({ type: "resync", from: TAB_ID });
  }

  /** Tells the other tabs how many of this tab's edits are unacknowledged (when it
   * changed). */
  announceQueued(own) {
    if (own === this._postedQueued) return;
    this._postedQueued = own;
    this._post({ type: "queued", from: TAB_ID, count: own });
  }

  /** The document moved to a new generation: the other tabs' edits went with the old. */
  forgetQueued() {
    this._others.clear();
  }

  /** Keeps `clients` up to date from an awareness change the other tabs brought. */
  noteAwareness({ added, updated, removed }) {
    for (const id of added.concat(updated)) this.clients.add(id);
    for (const id of removed) this.clients.delete(id);
  }

  _post(message) {
    if (this._channel === null) return;
    try {
      this._channel.postMessage(message);
    } catch (error) {
      console.info("collab: cannot post to the other tabs:", error);
    }
  }

  /** Waits for the end of another tab of this document (its Web Lock released: the
   * tab was closed), then adopts what it left unsent. */
  _watch(owner) {
    const { provider } = this;
    if (typeof owner !== "string" || owner === TAB_ID || this._watching.has(owner) || !provider._canAdopt()) return;
    this._watching.add(owner);
    watchTabLock(owner, this._abort.signal, async () => {
      this._watching.delete(owner);
      this._others.delete(owner);
      if (!provider.destroyed) await provider._adopt((e) => e.owner === owner);
      provider._queuedChanged();
    });
  }

  _receive(m) {
    if (m === null || typeof m !== "object") return;
    const { provider } = this;
    try {
      if (typeof m.from === "string" && m.from !== TAB_ID) this._watch(m.from);
      switch (m.type) {
        case "queued":
          if (typeof m.from === "string" && typeof m.count === "number") {
            if (m.count > 0) this._others.set(m.from, m.count);
            else this._others.delete(m.from);
            provider._queuedChanged();
          }
          return;
        case "released":
          // The tab left the document with edits unsent: they are this tab's now.
          this._others.delete(m.from);
          provider._adopt((e) => e.owner === m.from).catch((error) => console.error("collab: outbox:", error));
          provider._queuedChanged();
          return;
        case "resync":
          // Another tab's edit was refused; this copy holds it too.
          provider._resync();
          return;
        case "update":
          // A copy of another generation must not be merged in (see the provider's `reset`).
          if (m.epoch != null && provider.epoch !== null && m.epoch !== provider.epoch) return;
          if (m.update instanceof Uint8Array) Y.applyUpdate(provider.doc, m.update, this.origin);
          return;
        case "awareness":
          if (m.update instanceof Uint8Array) applyAwarenessUpdate(provider.awareness, m.update, this.origin);
          return;
        case "query":
          // A new tab: send what it lacks, and this copy's state vector, so that it
          // sends back what this one lacks.
          if (typeof m.queued === "number" && m.queued > 0) this._others.set(m.from, m.queued);
          if (m.sv instanceof Uint8Array && (m.epoch == null || provider.epoch === null || m.epoch === provider.epoch)) {
            const update = Y.encodeStateAsUpdate(provider.doc, m.sv);
            this._post({ type: "answer", to: m.from, from: TAB_ID, epoch: provider.epoch, update, sv: Y.encodeStateVector(provider.doc), queued: provider.ownQueued });
          }
          provider._queuedChanged();
          if (provider.awareness.getLocalState() !== null) {
            this.sendAwareness(encodeAwarenessUpdate(provider.awareness, [provider.doc.clientID]));
          }
          return;
        case "answer": {
          if (m.to !== TAB_ID) return;
          if (typeof m.queued === "number" && m.queued > 0) {
            this._others.set(m.from, m.queued);
            provider._queuedChanged();
          }
          if (m.epoch != null && provider.epoch !== null && m.epoch !== provider.epoch) return;
          if (!(m.update instanceof Uint8Array) || !(m.sv instanceof Uint8Array)) return;
          if (!isEmptyUpdate(m.update)) Y.applyUpdate(provider.doc, m.update, this.origin);
          const missing = Y.encodeStateAsUpdate(provider.doc, m.sv);
          if (!isEmptyUpdate(missing)) this.sendUpdate(missing);
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
