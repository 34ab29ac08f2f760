// One document's copy in this browser, as one tab keeps it: the document in a
// y-indexeddb database of its generation, and its outbox and meta (outbox.js), every
// write queued one after another. The provider decides what is written; this module
// knows where, in what order, and how tabs hand entries over.

import { IndexeddbPersistence } from "y-indexeddb";
import { deleteDB } from "lib0/indexeddb";
import { Outbox, openOutboxDatabase } from "./outbox.js";
import { TAB_ID, tabAlive, withDocumentLock } from "./tabs.js";

// Per document, the outbox writes of this tab's last provider of it: a provider opened
// again in the same tab waits for them before it reads the outbox.
const lastDisk = new Map();

/**
 * The document `name` kept in IndexedDB, unless `enabled` is false (then nothing
 * outlives the page: writes are skipped). Outbox entries are `{owner, n, epoch,
 * update, count}`, keyed by tab (`owner`) and number (`n`); `entry` makes this tab's.
 */
export class LocalCopy {
  constructor(name, enabled) {
    this.name = name;
    this.enabled = enabled;
    this.outbox = null; // an Outbox once `open` resolved
    this.gen = 0; // the copy's generation within the epoch (a resync starts one)
    this.storeEpoch = null; // the epoch of the database holding the document
    this.store = null; // that database (y-indexeddb), the origin of what it loads
    // Writes run one after another; the provider has them wait for its loading.
    this.disk = Promise.resolve();
    this._doc = null; // the Y.Doc the database was last opened for
    this._n = 0;
    this._closed = false;
  }

  /** Opens the outbox once this tab's lock is held (other tabs see it alive) and this
   * tab's last provider of the document is done writing; resolves to the document's
   * meta ({epoch, seq, gen}) or null. */
  async open() {
    const [db] = await Promise.all([openOutboxDatabase(), tabAlive, lastDisk.get(this.name)]);
    this.outbox = new Outbox(db, this.name, TAB_ID);
    const meta = await this.outbox.meta();
    if (meta !== null) this.gen = meta.gen ?? 0;
    return meta;
  }

  /** A new entry of this tab. */
  entry(epoch, update, count = 1) {
    return { owner: TAB_ID, n: ++this._n, epoch, update, count };
  }

  /** Queues `work(outbox)` after the writes queued before it; skipped when nothing is
   * kept (the outbox is read when the work runs: after loading, or never if it failed). */
  queue(work) {
    if (!this.enabled) return;
    this.disk = this.disk.then(() => (this.outbox === null ? undefined : work(this.outbox))).catch((error) => console.error("collab: outbox:", error));
  }

  writeMeta(epoch, seq) {
    const gen = this.gen;
    this.queue((outbox) => outbox.setMeta(epoch, seq, gen));
  }

  /** Takes over the outbox entries `pick` selects, as entries of this tab (renumbered);
   * resolves to them. Tabs adopt one at a time (a Web Lock per document). */
  adopt(pick) {
    return withDocumentLock(this.name, async () => {
      const all = await this.outbox.entries();
      for (const e of all) if (e.owner === TAB_ID) this._n = Math.max(this._n, e.n);
      const orphans = all.filter(pick);
      if (orphans.length === 0) return [];
      const mine = orphans.map((e) => this.entry(e.epoch, e.update, e.count ?? 1));
      await this.outbox.replace(orphans, mine);
      return mine;
    });
  }

  /** The other tabs with outbox entries of this document. */
  async otherOwners() {
    const owners = new Set();
    for (const e of await this.outbox.entries()) if (e.owner !== TAB_ID) owners.add(e.owner);
    return owners;
  }

  /** Each generation of a document has a database of its own, so that a tab that
   * moves to a new one never deletes what another tab still writes to. Both parts are
   * escaped: no name and epoch give the database of another document ("a@b" before its
   * first sync is not "a" at epoch "b"). */
  dbName(epoch, gen = this.gen) {
    const name = `collab:${encodeURIComponent(this.name)}@${epoch === null ? "-" : encodeURIComponent(epoch)}`;
    return gen > 0 ? `${name}#${gen}` : name;
  }

  /** Opens the database of `epoch` (and the current generation) for `doc`; resolves
   * once it is loaded into `doc`. */
  openStore(epoch, doc) {
    const store = new IndexeddbPersistence(this.dbName(epoch, this.gen), doc);
    this.store = store;
    this.storeEpoch = epoch;
    this._doc = doc;
    return store.whenSynced.then(() => {
      // Another tab deleting this database (it moved to a new generation first)
      // closes it: stop writing to it instead of failing on every edit.
      store.db.onversionchange = () => {
        store.db.close();
        if (this.store === store) {
          store.destroy();
          this.store = null;
        }
      };
    });
  }

  /** Moves `doc` to the database of `epoch` and generation `gen` (the first sync tells
   * the epoch; a reset changes it, a resync the generation), then deletes the one it
   * was in. A move asked for later, for another doc, supersedes this one. */
  moveStore(epoch, doc, gen = 0) {
    const old = this.store;
    const oldName = this.dbName(this.storeEpoch);
    this.storeEpoch = epoch;
    this.gen = gen;
    this._doc = doc;
    if (old !== null) old.destroy();
    this.store = null;
    this.queue(async () => {
      if (this._closed || this._doc !== doc) return;
      await this.openStore(epoch, doc); // it stores the whole document on opening
      if (oldName !== this.dbName(epoch)) await deleteDB(oldName);
    });
  }

  /** This tab's next provider of the document waits for the writes queued so far. */
  handOver() {
    lastDisk.set(this.name, this.disk);
  }

  /** Keeps nothing from now on (IndexedDB failed). */
  disable() {
    this.enabled = false;
    this.store?.destroy();
    this.store = null;
    this.outbox = null;
  }

  close() {
    this._closed = true;
    this.store?.destroy();
  }
}
