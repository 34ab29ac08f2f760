// Who wrote what: the text coloured by author, with the author's name on hover, from
// GET /api/documents/NAME/authors (each text run with the author of the update that
// inserted it). Used by the "Authors" view and by the history slider's change marks.
import { Editor, Extension } from "@tiptap/core";
import StarterKit from "@tiptap/starter-kit";
import { Plugin, PluginKey } from "@tiptap/pm/state";
import { Decoration, DecorationSet } from "@tiptap/pm/view";
import { api, docPath } from "./api.js";
import { textOf } from "./diffmarks.js";
import { h } from "./dom.js";

export const FIELD = "default"; // the XmlFragment Tiptap's Collaboration extension edits
// Far apart in hue, light enough for text on them.
const PALETTE = ["#ffd8a8", "#a5d8ff", "#b2f2bb", "#fcc2d7", "#d0bfff", "#ffec99", "#99e9f2", "#e9ecef"];

export const colourOf = (index) => PALETTE[index % PALETTE.length];

/** An author's name as the page shows it: the user, or a guest's name without the
 * prefix of the client label the page sends ("web:NAME"), as the timeline shows it. */
export const nameOf = (author) => author.user ?? (author.client ? author.client.replace(/^web:/, "") : "someone");

/** The authors of a version: `{seq, authors, runs}` (runs of the rich text; each
 * author with the `name` the page shows). */
export async function fetchAuthors(name, seq, signal) {
  const query = seq === undefined ? "" : `?seq=${seq}`;
  const body = await api(`${docPath(name)}/authors${query}`, { signal });
  const authors = body.authors.map((a) => ({ ...a, name: nameOf(a) }));
  return { seq: body.seq, authors, runs: body.roots[FIELD]?.runs ?? [] };
}

/** For each UTF-16 unit of the doc's text (textOf indexes it so), the author's
 * index, or null. */
export function authorOfEachChar(runs) {
  const each = [];
  for (const run of runs) for (let i = 0; i < run.text.length; i++) each.push(run.author);
  return each;
}

function decorations(doc, runs, authors) {
  const { text, positions } = textOf(doc);
  const each = authorOfEachChar(runs);
  // The runs are of the same version's text: if they are not, nothing is marked.
  if (runs.map((r) => r.text).join("") !== text) return DecorationSet.empty;
  const decos = [];
  let from = null;
  let last = null;
  let who = null;
  const flush = () => {
    if (from === null || who === null) return;
    const author = authors[who];
    decos.push(Decoration.inline(from, last + 1, { class: "by-author", style: `background: ${colourOf(who)}`, title: `Written by ${author?.name ?? "someone"}`, "data-author": author?.name ?? "" }));
  };
  for (let k = 0; k < text.length; k++) {
    if (text[k] === "\n") continue;
    const pos = positions[k];
    if (from !== null && each[k] === who && pos === last + 1) {
      last = pos;
      continue;
    }
    flush();
    from = pos;
    last = pos;
    who = each[k];
  }
  flush();
  return DecorationSet.create(doc, decos);
}

/** Tiptap extension: colours the text by options.runs (with options.authors). */
export const AuthorMarks = Extension.create({
  name: "authorMarks",
  addOptions() {
    return { runs: [], authors: [] };
  },
  addProseMirrorPlugins() {
    const { runs, authors } = this.options;
    let cached = null;
    return [
      new Plugin({
        key: new PluginKey("authorMarks"),
        props: {
          decorations(state) {
            if (cached === null || cached.doc !== state.doc) cached = { doc: state.doc, set: decorations(state.doc, runs, authors) };
            return cached.set;
          },
        },
      }),
    ];
  },
});

/**
 * Shows the latest version in `view`, read-only, coloured by author, with a legend.
 * `versionJSON(seq)` gives a version's ProseMirror JSON. Returns a function that
 * closes it.
 */
export function openAuthors({ name, view, versionJSON }) {
  let editor = null;
  let closed = false;
  const box = h("div", { id: "authors-view", class: "version", "aria-label": "The document coloured by author (read-only)" });
  const legend = h("ul", { id: "authors-legend", class: "legend", "aria-label": "Authors" });
  const message = h("p", { class: "history-message", role: "status" }, "Loading who wrote what…");
  view.replaceChildren(legend, message, box);
  view.hidden = false;
  (async () => {
    try {
      const found = await fetchAuthors(name);
      const json = await versionJSON(found.seq);
      if (closed) return;
      legend.replaceChildren(
        ...found.authors.map((a, i) => h("li", {}, h("span", { class: "swatch", style: `background: ${colourOf(i)}`, "aria-hidden": "true" }), a.name ?? "someone")),
      );
      editor = new Editor({ element: box, extensions: [StarterKit, AuthorMarks.configure({ runs: found.runs, authors: found.authors })], content: json, editable: false });
      box.dataset.seq = String(found.seq);
      message.textContent = `Version ${found.seq}: each part coloured by who wrote it (hover for the name).`;
    } catch (error) {
      if (!closed) message.textContent = `Who wrote what cannot be shown: ${error.message}`;
    }
  })();
  return () => {
    closed = true;
    editor?.destroy();
    view.hidden = true;
    view.replaceChildren();
  };
}
