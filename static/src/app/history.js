// The history panel: the document's timeline (changes grouped by sitting, with who
// and when, from the history API), a slider that shows any of those versions read-only
// with what changed since the one before marked, and a button that restores it.
import { Editor, getSchema } from "@tiptap/core";
import StarterKit from "@tiptap/starter-kit";
import { yXmlFragmentToProsemirrorJSON } from "@tiptap/y-tiptap";
import * as Y from "yjs";
import { api, docPath } from "./api.js";
import { authorOfEachChar, colourOf, fetchAuthors } from "./authors.js";
import { ChangeMarks, textOf } from "./diffmarks.js";
import { ago, h, when } from "./dom.js";
import { createReplay } from "./replay.js";

const MAX_CACHED_VERSIONS = 16; // versions kept while the panel is open (the latest shown)
const SETTLE_MS = 150; // the slider asks for the version it rests on this long
const MAX_PAGES = 20; // of 1000 changes: the timeline lists the first 20,000 sittings (the slider reaches every version)
const FIELD = "default"; // the XmlFragment Tiptap's Collaboration extension edits

async function timeline(name) {
  const changes = [];
  let after = 0;
  let retainedFrom = 0;
  for (let page = 0; page < MAX_PAGES; page++) {
    const body = await api(`${docPath(name)}/history?group=session&limit=1000&after=${after}`);
    retainedFrom = body.retained_from ?? 0;
    changes.push(...body.changes);
    if (body.next_after === null || body.next_after === undefined) break;
    after = body.next_after;
  }
  return { changes, retainedFrom };
}

export async function versionJSON(name, seq, signal) {
  const doc = new Y.Doc();
  try {
    if (seq > 0) Y.applyUpdate(doc, await api(`${docPath(name)}/state?seq=${seq}&waiting=no`, { binary: true, signal }));
    const json = yXmlFragmentToProsemirrorJSON(doc.getXmlFragment(FIELD));
    // An empty document still has one (empty) paragraph, as the editor shows it.
    if (!json.content?.length) json.content = [{ type: "paragraph" }];
    return json;
  } finally {
    doc.destroy();
  }
}

/** The change (a sitting of one user) that `seq` belongs to, or null. */
function changeOf(changes, seq) {
  let lo = 0;
  let hi = changes.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const c = changes[mid];
    if (seq < c.first_seq) hi = mid - 1;
    else if (seq > c.last_seq) lo = mid + 1;
    else return c;
  }
  return null;
}

const whoOf = (c) => c.user ?? (c.clients?.length ? c.clients.join(", ") : "someone");
const updatesOf = (n) => `${n} ${n === 1 ? "update" : "updates"}`;

/**
 * Opens the panel in `panel` and the version view in `view`. The slider goes through
 * every version (one per stored update); the timeline lists the changes (a user's
 * sitting) and jumps to the end of each. The version shown marks what its change did
 * up to it (since the version before that change). `canRestore` says whether the user
 * may write; `onClose` is called when the user goes back to editing.
 */
export function openHistory({ name, panel, view, canRestore, onClose, announce }) {
  let changes = [];
  let head = 0;
  let oldest = 0;
  let preview = null;
  let showing = -1;
  let loadToken = 0;
  let debounce = null;
  // Versions fetched (or being fetched), the latest few: going back and forth does not
  // download them again. Choosing another version aborts the downloads under way.
  const versions = new Map(); // seq -> {promise, done}
  let downloads = new AbortController();
  const version = (seq) => {
    let entry = versions.get(seq);
    if (entry === undefined) {
      entry = { done: false, promise: null };
      const settled = entry;
      entry.promise = versionJSON(name, seq, downloads.signal).then(
        (json) => {
          settled.done = true;
          return json;
        },
        (error) => {
          if (versions.get(seq) === settled) versions.delete(seq);
          throw error;
        },
      );
      versions.set(seq, entry);
      while (versions.size > MAX_CACHED_VERSIONS) versions.delete(versions.keys().next().value);
    }
    return entry.promise;
  };
  const abortDownloads = () => {
    downloads.abort();
    for (const [seq, entry] of versions) if (!entry.done) versions.delete(seq);
    downloads = new AbortController();
  };

  const slider = h("input", { type: "range", id: "history-slider", min: "0", max: "0", value: "0", step: "1", "aria-label": "Version", disabled: true });
  const label = h("p", { id: "history-label", "aria-live": "polite" });
  const list = h("ol", { id: "history-list", class: "timeline", "aria-label": "Changes, newest first" });
  const restore = h("button", { type: "button", id: "history-restore", disabled: true }, "Restore this version");
  const close = h("button", { type: "button", id: "history-close" }, "Back to editing");
  const play = h("button", { type: "button", id: "history-play", disabled: true, "aria-pressed": "false" }, "Play");
  const speed = h(
    "select",
    { id: "history-speed", "aria-label": "Replay speed" },
    ...[1, 4, 16, 64].map((n) => h("option", { value: String(n), selected: n === 4 }, `${n}×`)),
  );
  let replay = null; // the player while the history is being replayed
  const message = h("p", { class: "history-message", role: "status" });
  const legend = h("ul", { id: "history-authors", class: "legend", "aria-label": "Who added the marked parts", hidden: true });
  panel.replaceChildren(
    h("h2", { id: "history-title" }, "History"),
    slider,
    label,
    legend,
    h("div", { class: "history-actions" }, restore, close),
    h("div", { class: "history-actions replay" }, play, speed),
    message,
    list,
  );
  panel.hidden = false;
  const versionBox = h("div", { id: "version", class: "version", "aria-label": "The chosen version (read-only)" });
  view.replaceChildren(versionBox);
  view.hidden = false;

  const describe = (seq, change) => {
    const at = `Version ${seq} of ${head}`;
    if (change === null) {
      if (seq === 0) return `${at}: the empty document`;
      return seq === oldest ? `${at}: the oldest version kept` : at;
    }
    const step = seq - change.first_seq + 1;
    const of = change.updates > 1 ? `, update ${step} of ${change.updates}` : "";
    return `${at}: ${whoOf(change)}, ${when(change.last_time_s)}${of}`;
  };

  const stopReplay = () => {
    replay?.destroy();
    replay = null;
    play.textContent = "Play";
    play.setAttribute("aria-pressed", "false");
  };

  const show = async (seq) => {
    if (!(seq >= oldest && seq <= head)) return;
    clearTimeout(debounce);
    stopReplay();
    showing = seq;
    slider.value = String(seq);
    const change = changeOf(changes, seq);
    const text = describe(seq, change);
    label.textContent = text;
    slider.setAttribute("aria-valuetext", text);
    for (const li of list.children) li.setAttribute("aria-current", String(change !== null && li.dataset.lastSeq === String(change.last_seq)));
    restore.disabled = !canRestore || seq === head;
    const base = change === null ? null : Math.max(change.first_seq - 1, oldest);
    const token = ++loadToken;
    abortDownloads();
    message.textContent = "";
    try {
      const [json, previous] = await Promise.all([version(seq), base !== null && base < seq ? version(base) : Promise.resolve(null)]);
      if (token !== loadToken) return; // another version was chosen meanwhile
      const schema = getSchema([StarterKit]);
      const previousText = previous === null ? null : textOf(schema.nodeFromJSON(previous)).text;
      const deletedBy = change === null ? null : whoOf(change);
      const render = (authorOf) => {
        preview?.destroy();
        preview = new Editor({
          element: versionBox,
          extensions: [StarterKit, ChangeMarks.configure({ previousText, authorOf, deletedBy })],
          content: json,
          editable: false,
        });
      };
      render(null);
      versionBox.dataset.seq = String(seq);
      delete versionBox.dataset.authors;
      legend.hidden = true;
      if (previousText !== null) {
        // Who wrote each character (the marks' titles), asked once the version shows:
        // the server allows each user only a few such reads at once.
        const authorship = await fetchAuthors(name, seq, downloads.signal).catch(() => null);
        if (token !== loadToken) return;
        if (authorship !== null && authorship.runs.map((r) => r.text).join("") === textOf(schema.nodeFromJSON(json)).text) {
          const each = authorOfEachChar(authorship.runs);
          const who = authorship.authors.map((a, i) => ({ name: a.name ?? "someone", colour: colourOf(i) }));
          render((k) => (each[k] === null || each[k] === undefined ? null : who[each[k]]));
          versionBox.dataset.authors = "true";
          // The colours of what this change added, by who added it.
          const marked = new Set([...versionBox.querySelectorAll(".change-insert[data-author]")].map((e) => e.dataset.author));
          const shown = who.filter((w) => marked.has(w.name));
          legend.replaceChildren(...shown.map((w) => h("li", {}, h("span", { class: "swatch", style: `background: ${w.colour}`, "aria-hidden": "true" }), `added by ${w.name}`)));
          legend.hidden = shown.length === 0;
        }
      }
    } catch (error) {
      if (token === loadToken) message.textContent = `This version cannot be shown: ${error.message}`;
    }
  };

  // Dragging, or holding an arrow key, asks for the version the slider rests on, not
  // for every one it passes.
  const settle = () => {
    clearTimeout(debounce);
    const seq = Number(slider.value);
    label.textContent = describe(seq, changeOf(changes, seq));
    debounce = setTimeout(() => show(seq), SETTLE_MS);
  };
  play.addEventListener("click", () => {
    if (replay?.playing) {
      replay.pause();
      return;
    }
    loadToken++; // a version being fetched for the slider is not shown over the replay
    clearTimeout(debounce);
    abortDownloads();
    preview?.destroy();
    preview = null;
    replay?.destroy();
    const from = showing >= head || showing < oldest ? oldest : showing;
    versionBox.replaceChildren();
    message.textContent = "";
    legend.hidden = true;
    play.textContent = "Pause";
    play.setAttribute("aria-pressed", "true");
    versionBox.dataset.playing = "true";
    const stepTo = (seq) => {
      showing = seq;
      slider.value = String(seq);
      label.textContent = describe(seq, changeOf(changes, seq));
      versionBox.dataset.seq = String(seq);
      restore.disabled = !canRestore || seq === head;
    };
    stepTo(from);
    replay = createReplay({
      name,
      box: versionBox,
      from,
      head,
      speed: Number(speed.value),
      onStep: stepTo,
      onEnd: (seq, error) => {
        play.textContent = "Play";
        play.setAttribute("aria-pressed", "false");
        versionBox.dataset.playing = "false";
        if (error) message.textContent = `The replay stopped: ${error.message}`;
        else message.textContent = seq >= head ? "Played to the latest version." : `Paused at version ${seq}.`;
      },
    });
    replay.play();
  });
  speed.addEventListener("change", () => replay?.setSpeed(Number(speed.value)));
  slider.addEventListener("input", settle);
  slider.addEventListener("change", settle);
  restore.addEventListener("click", async () => {
    const seq = showing;
    if (seq < 0) return;
    restore.disabled = true;
    message.textContent = `Restoring version ${seq}…`;
    try {
      const result = await api(`${docPath(name)}/restore`, { method: "POST", body: { seq } });
      announce(result.changed ? `Restored version ${seq}.` : `The document already was version ${seq}.`);
      finish();
    } catch (error) {
      message.textContent = `Restore failed: ${error.message}`;
      restore.disabled = false;
    }
  });
  const finish = () => {
    loadToken++;
    clearTimeout(debounce);
    abortDownloads();
    versions.clear();
    stopReplay();
    preview?.destroy();
    preview = null;
    panel.hidden = true;
    view.hidden = true;
    panel.replaceChildren();
    view.replaceChildren();
    onClose();
  };
  close.addEventListener("click", finish);
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") finish();
  });

  (async () => {
    message.textContent = "Loading the history…";
    try {
      const timelineBody = await timeline(name);
      changes = timelineBody.changes;
      if (changes.length === 0) {
        message.textContent = "No changes yet.";
        return;
      }
      head = changes[changes.length - 1].last_seq;
      // The document's latest seq, in case the timeline was longer than listed.
      const listed = await api(`/api/documents?${new URLSearchParams({ prefix: name, limit: "1" })}`);
      const self = listed.documents.find((d) => d.name === name);
      if (self !== undefined && self.seq > head) head = self.seq;
      oldest = Math.max(changes[0].first_seq - 1, timelineBody.retainedFrom);
      slider.min = String(oldest);
      slider.max = String(head);
      slider.disabled = false;
      play.disabled = false;
      list.replaceChildren(
        ...changes
          .map((c) =>
            h(
              "li",
              { dataset: { firstSeq: String(c.first_seq), lastSeq: String(c.last_seq) } },
              h("button", { type: "button", class: "link", onclick: () => show(c.last_seq) }, whoOf(c)),
              h("span", { class: "meta" }, ` ${ago(c.last_time_s)} · ${updatesOf(c.updates)} · versions ${c.first_seq}–${c.last_seq}`),
            ),
          )
          .reverse(),
        h("li", { dataset: { lastSeq: String(oldest) } }, h("button", { type: "button", class: "link", onclick: () => show(oldest) }, oldest === 0 ? "Start" : "Oldest kept")),
      );
      message.textContent = "";
      await show(head);
      slider.focus();
    } catch (error) {
      message.textContent = `The history is unavailable: ${error.message}`;
    }
  })();

  return finish;
}
