// The outbox on disk: every local edit the server has not acknowledged yet, kept in
// IndexedDB so that it survives closing the tab, together with the epoch and seq of
// the document's copy (for resuming). One database per origin, shared by the tabs.
//
// Entries are keyed [doc, owner, n]: `owner` is the tab that made the edit. A tab
// that opens a document adopts the entries of tabs that are gone (their Web Lock is
// no longer held: tabs.js), so edits made offline in a tab that was then closed are
// counted, sent and cleared by the next tab of that document (persistence.js).

const DB_NAME = "collab-outbox";
const DB_VERSION = 1;
const ENTRIES = "entries"; // key [doc, owner, n] -> {doc, owner, n, epoch, update}
const META = "meta"; // key doc -> {doc, epoch, seq}

let opening = null;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  });
}

/** The shared database, opened once per page. */
export function openOutboxDatabase() {
  if (opening === null) {
    opening = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, DB_VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        db.createObjectStore(ENTRIES, { keyPath: ["doc", "owner", "n"] });
        db.createObjectStore(META, { keyPath: "doc" });
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error("the outbox database is blocked by another tab"));
    });
  }
  return opening;
}

/** One document's outbox, as seen from one tab (`owner`). */
export class Outbox {
  constructor(db, doc, owner) {
    this.db = db;
    this.doc = doc;
    this.owner = owner;
  }

  async meta() {
    const tx = this.db.transaction(META, "readonly");
    return (await request(tx.objectStore(META).get(this.doc))) ?? null;
  }

  async setMeta(epoch, seq, gen = 0) {
    const tx = this.db.transaction(META, "readwrite");
    tx.objectStore(META).put({ doc: this.doc, epoch, seq, gen });
    await done(tx);
  }

  /** Every entry of this document, of every owner, in key order. */
  async entries() {
    const tx = this.db.transaction(ENTRIES, "readonly");
    const range = IDBKeyRange.bound([this.doc], [this.doc, []]);
    return request(tx.objectStore(ENTRIES).getAll(range));
  }

  async put(entry) {
    const tx = this.db.transaction(ENTRIES, "readwrite");
    tx.objectStore(ENTRIES).put({ doc: this.doc, ...entry });
    await done(tx);
  }

  /** Replaces `removed` entries by `added` ones in one transaction. */
  async replace(removed, added) {
    const tx = this.db.transaction(ENTRIES, "readwrite");
    const store = tx.objectStore(ENTRIES);
    for (const e of removed) store.delete([this.doc, e.owner, e.n]);
    for (const e of added) store.put({ doc: this.doc, ...e });
    await done(tx);
  }

  async remove(entries) {
    if (entries.length > 0) await this.replace(entries, []);
  }

  /** Forgets the document's outbox and meta (after a reset to a new epoch). */
  async clear() {
    const tx = this.db.transaction([ENTRIES, META], "readwrite");
    tx.objectStore(ENTRIES).delete(IDBKeyRange.bound([this.doc], [this.doc, []]));
    tx.objectStore(META).delete(this.doc);
    await done(tx);
  }
}
