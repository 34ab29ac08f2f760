// The history panel: the document's timeline (named versions first, then changes
// grouped by sitting, with who and when, from the history API), a slider that shows
// any of those versions read-only with what changed since the one before marked, and
// buttons that name it and restore it.
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

async function namedVersions(name) {
  try {
    return (await api(`${docPath(name)}/names`)).names;
  } catch {
    return []; // a server without names: the timeline stands without them
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

// A change is one author's (the server splits the timeline per user, or per guest by
// the client label the page sends, "web:NAME"): its name, without the page's prefix.
const whoOf = (c) => c.user ?? (c.clients?.length ? c.clients[0].replace(/^web:/, "") : "someone");
const updatesOf = (n) => `${n} ${n === 1 ? "update" : "updates"}`;

/**
 * Opens the panel in `panel` and the version view in `view`. The slider goes through
 * every version (one per stored update); the timeline lists the changes (a user's
 * sitting) and jumps to the end of each. The version shown marks what its change did
 * up to it (since the version before that change). `canRestore` says whether the user
 * may write; `onClose` is called when the user goes back to editing.
 */
export function openHistory({ name, panel, view, canRestore, onClose, onRestored, announce }) {
  let changes = [];
  let named = new Map(); // seq -> {seq, name, user, time_s}
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
  const legend = h("ul", { id: "history-authors", class: "legend", "aria-label": "Who added the marked parts", hidden: true });
  const nameButton = h("button", { type: "button", id: "history-name", disabled: true }, "Name this version");
  // Naming asks for the name in the panel; an empty name takes the name away.
  const nameInput = h("input", { type: "text", id: "history-name-input", maxlength: 100, autocomplete: "off" });
  const nameSave = h("button", { type: "submit", id: "history-name-save" }, "Save name");
  const nameCancel = h("button", { type: "button", id: "history-name-cancel" }, "Cancel");
  const nameForm = h("form", { id: "history-name-form", class: "history-name", hidden: true }, h("label", { for: "history-name-input" }, "Name: "), nameInput, h("div", { class: "history-actions" }, nameSave, nameCancel));
  const message = h("p", { class: "history-message", role: "status" });
  // Restoring changes the text for everyone: it is asked first, in the panel.
  const confirmText = h("p", { id: "history-confirm-text" });
  const confirmYes = h("button", { type: "button", id: "history-restore-confirm", class: "danger" }, "Restore for everyone");
  const confirmNo = h("button", { type: "button", id: "history-restore-cancel" }, "Cancel");
  const confirmBox = h("div", { id: "history-confirm", class: "history-confirm", role: "alertdialog", "aria-labelledby": "history-confirm-text", hidden: true }, confirmText, h("div", { class: "history-actions" }, confirmYes, confirmNo));
  panel.replaceChildren(
    h("h2", { id: "history-title" }, "History"),
    slider,
    label,
    legend,
    h("div", { class: "history-actions" }, restore, nameButton, close),
    confirmBox,
    nameForm,
    h("div", { class: "history-actions replay" }, play, speed),
    message,
    list,
  );
  panel.hidden = false;
  // On a narrow screen the panel comes first (app.css): bring it into view.
  panel.scrollIntoView?.({ block: "start" });
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
    const title = named.has(seq) ? ` · “${named.get(seq).name}”` : "";
    return `${at}${title}: ${whoOf(change)}, ${when(change.last_time_s)}${of}`;
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
    for (const li of list.children) {
      const current = li.dataset.namedSeq !== undefined ? li.dataset.namedSeq === String(seq) : change !== null && li.dataset.lastSeq === String(change.last_seq);
      li.setAttribute("aria-current", String(current));
    }
    if (confirming >= 0) cancelConfirm(); // another version: ask again
    nameForm.hidden = true;
    restore.disabled = !canRestore || seq === head;
    nameButton.disabled = !canRestore || seq <= 0;
    nameButton.textContent = named.has(seq) ? "Rename this version" : "Name this version";
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
  let confirming = -1;
  const cancelConfirm = () => {
    confirming = -1;
    confirmBox.hidden = true;
    restore.disabled = !canRestore || showing === head;
  };
  restore.addEventListener("click", () => {
    if (showing < 0) return;
    confirming = showing;
    confirmText.textContent = `Restore version ${confirming} of ${head}? Everyone editing sees the text go back to it; the text now stays in the history.`;
    confirmBox.hidden = false;
    restore.disabled = true;
    confirmNo.focus();
  });
  confirmNo.addEventListener("click", () => {
    cancelConfirm();
    restore.focus();
  });
  confirmYes.addEventListener("click", async () => {
    const seq = confirming;
    if (seq < 0) return;
    confirmYes.disabled = confirmNo.disabled = true;
    message.textContent = `Restoring version ${seq}…`;
    try {
      const result = await api(`${docPath(name)}/restore`, { method: "POST", body: { seq } });
      announce(result.changed ? `Restored version ${seq}.` : `The document already was version ${seq}.`);
      onRestored?.({ seq, changed: result.changed });
      finish();
    } catch (error) {
      message.textContent = `Restore failed: ${error.message}`;
      confirmYes.disabled = confirmNo.disabled = false;
      cancelConfirm();
    }
  });
  nameButton.addEventListener("click", () => {
    if (showing <= 0) return;
    nameInput.value = named.get(showing)?.name ?? "";
    nameInput.setAttribute("aria-label", `Name of version ${showing}`);
    nameForm.hidden = false;
    nameInput.focus();
  });
  nameCancel.addEventListener("click", () => {
    nameForm.hidden = true;
    nameButton.focus();
  });
  nameForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const seq = showing;
    const given = nameInput.value.trim();
    nameSave.disabled = true;
    try {
      const path = `${docPath(name)}/versions/${seq}/name`;
      if (given) await api(path, { method: "PUT", body: { name: given } });
      else if (named.has(seq)) await api(path, { method: "DELETE" });
      named = new Map((await namedVersions(name)).map((n) => [n.seq, n]));
      renderList();
      message.textContent = given ? `Version ${seq} is named “${given}”.` : `Version ${seq} has no name now.`;
      nameForm.hidden = true;
      await show(seq);
      nameButton.focus();
    } catch (error) {
      message.textContent = `The name was not saved: ${error.message}`;
    } finally {
      nameSave.disabled = false;
    }
  });
  const renderList = () => {
    // Named versions first (newest first), then the changes (newest first).
    const names = [...named.values()].sort((a, b) => b.seq - a.seq);
    list.replaceChildren(
      ...names.map((n) =>
        h(
          "li",
          { class: "named", dataset: { namedSeq: String(n.seq) } },
          h("button", { type: "button", class: "link", onclick: () => show(n.seq) }, `★ ${n.name}`),
          h("span", { class: "meta" }, ` version ${n.seq}${n.user ? ` · named by ${n.user}` : ""} · ${ago(n.time_s)}`),
        ),
      ),
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
  };
  const finish = () => {
    document.removeEventListener("keydown", onEscape);
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
  // Escape leaves the history wherever the focus is (the slider takes it only once
  // the newest version shows), unless a dialog above the page takes the key.
  const onEscape = (event) => {
    if (event.key !== "Escape" || document.querySelector("dialog[open]") !== null) return;
    if (confirming >= 0) cancelConfirm();
    else finish();
  };
  document.addEventListener("keydown", onEscape);

  (async () => {
    message.textContent = "Loading the history…";
    try {
      const [timelineBody, names] = await Promise.all([timeline(name), namedVersions(name)]);
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
      named = new Map(names.filter((n) => n.seq >= oldest && n.seq <= head).map((n) => [n.seq, n]));
      slider.min = String(oldest);
      slider.max = String(head);
      slider.disabled = false;
      play.disabled = false;
      renderList();
      message.textContent = "";
      await show(head);
      slider.focus();
    } catch (error) {
      message.textContent = `The history is unavailable: ${error.message}`;
    }
  })();

  return finish;
}
