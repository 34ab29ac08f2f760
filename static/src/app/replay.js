// Replay: the document's history played as it was typed, into a read-only editor.
// It starts from the version the slider shows (its state, one request) and applies
// the log's updates after it from the history pages the slider's timeline comes from
// (GET .../history?after=SEQ&limit=PAGE&include=update), fetched as it plays: at most
// one page is held, never the whole log.
import { Editor } from "@tiptap/core";
import Collaboration from "@tiptap/extension-collaboration";
import StarterKit from "@tiptap/starter-kit";
import * as Y from "yjs";
import { api, docPath } from "./api.js";
import { FIELD } from "./authors.js";

export const PAGE = 200; // updates fetched at once
const MIN_STEP_MS = 20; // between two updates at 1× (typing faster than this is shown at this pace)
const MAX_STEP_MS = 1000; // a longer pause is shown as this long at 1×

const decode = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

/**
 * A player in `box` from version `from` to `head`. `onStep(seq)` after each update;
 * `onEnd(seq)` when it stops (paused, at the head, or failed: `error`).
 */
export function createReplay({ name, box, from, head, speed, onStep, onEnd }) {
  const doc = new Y.Doc();
  let editor = null;
  let seq = from;
  let page = []; // the updates fetched and not yet applied
  let more = true;
  let playing = false;
  let timer = null;
  let lastTime = null;
  let destroyed = false;
  const state = { speed };

  const ready = (async () => {
    if (from > 0) Y.applyUpdate(doc, await api(`${docPath(name)}/state?seq=${from}`, { binary: true }));
    if (destroyed) return;
    editor = new Editor({ element: box, extensions: [StarterKit.configure({ undoRedo: false }), Collaboration.configure({ document: doc, field: FIELD })], editable: false });
  })();

  async function next() {
    if (page.length === 0 && more) {
      const body = await api(`${docPath(name)}/history?after=${seq}&limit=${PAGE}&include=update`);
      page = body.updates;
      more = body.next_after !== null && body.next_after !== undefined;
    }
    return page.shift() ?? null;
  }

  async function step() {
    timer = null;
    if (!playing || destroyed) return;
    try {
      const update = seq < head ? await next() : null;
      if (destroyed) return;
      if (update === null) {
        playing = false;
        onEnd(seq, null);
        return;
      }
      Y.applyUpdate(doc, decode(update.update));
      seq = update.seq;
      const gapMs = lastTime === null ? MIN_STEP_MS : (update.time_s - lastTime) * 1000;
      lastTime = update.time_s;
      onStep(seq);
      if (!playing) return;
      const wait = Math.min(MAX_STEP_MS, Math.max(MIN_STEP_MS, gapMs)) / state.speed;
      timer = setTimeout(step, wait);
    } catch (error) {
      playing = false;
      onEnd(seq, error);
    }
  }

  return {
    get seq() {
      return seq;
    },
    get playing() {
      return playing;
    },
    setSpeed(value) {
      state.speed = value;
    },
    async play() {
      await ready;
      if (playing || destroyed) return;
      playing = true;
      step();
    },
    pause() {
      if (!playing) return;
      playing = false;
      clearTimeout(timer);
      timer = null;
      onEnd(seq, null);
    },
    destroy() {
      destroyed = true;
      playing = false;
      clearTimeout(timer);
      editor?.destroy();
      doc.destroy();
    },
  };
}
