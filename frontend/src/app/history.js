// The history panel: the document's timeline (changes grouped by sitting, with who
// and when, from the history API), a slider that shows any of those versions read-only
// with what changed since the one before marked, and a button that restores it.
import { Editor, getSchema } from "@tiptap/core";
import StarterKit from "@tiptap/starter-kit";
import { yXmlFragmentToProsemirrorJSON } from "@tiptap/y-tiptap";
import * as Y from "yjs";
import { api, docPath } from "./api.js";
import { ChangeMarks, textOf } from "./diffmarks.js";
import { ago, h, when } from "./dom.js";

const MAX_PAGES = 20; // of 1000 changes: the panel shows the 20,000 latest sittings at most
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

async function versionJSON(name, seq) {
  const doc = new Y.Doc();
  try {
    if (seq > 0) Y.applyUpdate(doc, await api(`${docPath(name)}/state?seq=${seq}&waiting=no`, { binary: true }));
    const json = yXmlFragmentToProsemirrorJSON(doc.getXmlFragment(FIELD));
    // An empty document still has one (empty) paragraph, as the editor shows it.
    if (!json.content?.length) json.content = [{ type: "paragraph" }];
    return json;
  } finally {
    doc.destroy();
  }
}

/**
 * Opens the panel in `panel` and the version view in `view`. `canRestore` says whether
 * the user may write. `onClose` is called when the user goes back to editing.
 */
export function openHistory({ name, panel, view, canRestore, onClose, announce }) {
  let versions = [];
  let preview = null;
  let showing = -1;
  let loadToken = 0;

  const slider = h("input", { type: "range", id: "history-slider", min: "0", max: "0", value: "0", step: "1", "aria-label": "Version", disabled: true });
  const label = h("p", { id: "history-label", "aria-live": "polite" });
  const list = h("ol", { id: "history-list", class: "timeline" });
  const restore = h("button", { type: "button", id: "history-restore", disabled: true }, "Restore this version");
  const close = h("button", { type: "button", id: "history-close" }, "Back to editing");
  const message = h("p", { class: "history-message", role: "status" });
  panel.replaceChildren(
    h("h2", { id: "history-title" }, "History"),
    h("label", { for: "history-slider", class: "visually-hidden" }, "Version"),
    slider,
    label,
    h("div", { class: "history-actions" }, restore, close),
    message,
    list,
  );
  panel.hidden = false;
  const versionBox = h("div", { id: "version", class: "version", "aria-label": "The chosen version (read-only)" });
  view.replaceChildren(versionBox);
  view.hidden = false;

  const describe = (v) => {
    if (v.change === null) return `Version ${v.seq}: ${v.seq === 0 ? "the empty document" : "the oldest version kept"}`;
    const c = v.change;
    const who = c.user ?? (c.clients?.length ? c.clients.join(", ") : "someone");
    return `Version ${v.seq}: ${who}, ${when(c.last_time_s)} (${c.updates} ${c.updates === 1 ? "update" : "updates"})`;
  };

  const show = async (index) => {
    if (index < 0 || index >= versions.length) return;
    showing = index;
    slider.value = String(index);
    const v = versions[index];
    label.textContent = describe(v);
    slider.setAttribute("aria-valuetext", describe(v));
    for (const [i, li] of [...list.children].entries()) li.setAttribute("aria-current", String(versions.length - 1 - i === index));
    restore.disabled = !canRestore || index === versions.length - 1;
    const token = ++loadToken;
    message.textContent = "";
    try {
      const [json, previous] = await Promise.all([
        versionJSON(name, v.seq),
        index > 0 ? versionJSON(name, versions[index - 1].seq) : Promise.resolve(null),
      ]);
      if (token !== loadToken) return; // another version was chosen meanwhile
      preview?.destroy();
      let previousText = null;
      if (previous !== null) {
        previousText = textOf(getSchema([StarterKit]).nodeFromJSON(previous)).text;
      }
      preview = new Editor({
        element: versionBox,
        extensions: [StarterKit, ChangeMarks.configure({ previousText })],
        content: json,
        editable: false,
      });
      versionBox.dataset.seq = String(v.seq);
    } catch (error) {
      if (token === loadToken) message.textContent = `This version cannot be shown: ${error.message}`;
    }
  };

  slider.addEventListener("input", () => show(Number(slider.value)));
  restore.addEventListener("click", async () => {
    const v = versions[showing];
    if (!v) return;
    restore.disabled = true;
    message.textContent = `Restoring version ${v.seq}…`;
    try {
      const result = await api(`${docPath(name)}/restore`, { method: "POST", body: { seq: v.seq } });
      announce(result.changed ? `Restored version ${v.seq}.` : `The document already was version ${v.seq}.`);
      finish();
    } catch (error) {
      message.textContent = `Restore failed: ${error.message}`;
      restore.disabled = false;
    }
  });
  const finish = () => {
    loadToken++;
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
      const { changes, retainedFrom } = await timeline(name);
      if (changes.length === 0) {
        message.textContent = "No changes yet.";
        return;
      }
      const first = changes[0].first_seq - 1;
      versions = [{ seq: Math.max(first, retainedFrom), change: null }, ...changes.map((c) => ({ seq: c.last_seq, change: c }))];
      slider.max = String(versions.length - 1);
      slider.disabled = false;
      list.replaceChildren(
        ...versions
          .map((v, index) =>
            h(
              "li",
              { dataset: { seq: String(v.seq) } },
              h("button", { type: "button", class: "link", onclick: () => show(index) }, v.change ? (v.change.user ?? v.change.clients?.[0] ?? "someone") : "Start"),
              v.change ? h("span", { class: "meta" }, ` ${ago(v.change.last_time_s)} · ${v.change.updates} ${v.change.updates === 1 ? "update" : "updates"} · seq ${v.change.first_seq}–${v.change.last_seq}`) : null,
            ),
          )
          .reverse(),
      );
      message.textContent = "";
      await show(versions.length - 1);
      slider.focus();
    } catch (error) {
      message.textContent = `The history is unavailable: ${error.message}`;
    }
  })();

  return finish;
}
