// Marks what changed between two versions of a rich-text document: inserted text
// highlighted, deleted text shown struck through where it was. A character diff of
// the two texts (blocks separated by newlines), computed once per version shown.
import { Extension } from "@tiptap/core";
import { Plugin, PluginKey } from "@tiptap/pm/state";
import { Decoration, DecorationSet } from "@tiptap/pm/view";

const MAX_CELLS = 4_000_000; // of the LCS table; past it the changed middle is one replacement

/** The text of a ProseMirror doc, and the doc position of each of its characters. */
export function textOf(doc) {
  let text = "";
  const positions = [];
  doc.descendants((node, pos) => {
    if (node.isTextblock && text.length > 0) {
      text += "\n";
      positions.push(pos);
    }
    if (node.isText) {
      for (let i = 0; i < node.text.length; i++) positions.push(pos + i);
      text += node.text;
    }
    return true;
  });
  return { text, positions };
}

/** [kind, text] runs turning `a` into `b`: kind "=", "+" or "-". */
export function diffText(a, b) {
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const runs = [];
  const push = (kind, text) => {
    if (!text) return;
    const last = runs[runs.length - 1];
    if (last && last[0] === kind) last[1] += text;
    else runs.push([kind, text]);
  };
  push("=", a.slice(0, start));
  const midA = a.slice(start, endA);
  const midB = b.slice(start, endB);
  const n = midA.length;
  const m = midB.length;
  if ((n + 1) * (m + 1) > MAX_CELLS) {
    push("-", midA);
    push("+", midB);
  } else {
    // LCS lengths from the end, then one walk from the start.
    const width = m + 1;
    const table = new Uint32Array((n + 1) * width);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        table[i * width + j] =
          midA[i] === midB[j] ? table[(i + 1) * width + j + 1] + 1 : Math.max(table[(i + 1) * width + j], table[i * width + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (midA[i] === midB[j]) {
        push("=", midA[i]);
        i++;
        j++;
      } else if (table[(i + 1) * width + j] >= table[i * width + j + 1]) {
        push("-", midA[i++]);
      } else {
        push("+", midB[j++]);
      }
    }
    push("-", midA.slice(i));
    push("+", midB.slice(j));
  }
  push("=", a.slice(endA));
  return runs;
}

// authorOf(k): who wrote character k of the new text ({name, colour}, or null: not
// known);
// deletedBy: who made the change (the deletions' author).
function decorations(doc, previousText, authorOf, deletedBy) {
  const { text, positions } = textOf(doc);
  const decos = [];
  let at = 0; // index in the new text
  const posAt = (index) => (index < positions.length ? positions[index] : doc.content.size - 1);
  for (const [kind, run] of diffText(previousText, text)) {
    if (kind === "=") {
      at += run.length;
    } else if (kind === "+") {
      // One inline decoration per stretch of contiguous positions by one author
      // (blocks break them), titled with who added it.
      let from = null;
      let last = null;
      let who = null;
      const mark = () => {
        const attrs = { class: "change-insert" };
        if (who) {
          attrs.title = `Added by ${who.name}`;
          attrs["data-author"] = who.name;
          if (who.colour) attrs.style = `background: ${who.colour}`;
        }
        decos.push(Decoration.inline(from, last + 1, attrs));
      };
      for (let k = at; k < at + run.length; k++) {
        if (text[k] === "\n") continue;
        const pos = positions[k];
        const by = authorOf ? authorOf(k) : null;
        if (from !== null && pos === last + 1 && by?.name === who?.name) {
          last = pos;
          continue;
        }
        if (from !== null) mark();
        from = pos;
        last = pos;
        who = by;
      }
      if (from !== null) mark();
      at += run.length;
    } else {
      const shown = run.replace(/\n/g, " ¶ ");
      decos.push(
        Decoration.widget(Math.max(1, posAt(at)), () => {
          const del = document.createElement("del");
          del.className = "change-delete";
          del.textContent = shown;
          if (deletedBy) del.title = `Deleted by ${deletedBy}`;
          return del;
        }, { side: -1, key: `del-${at}-${run.length}` }),
      );
    }
  }
  return DecorationSet.create(doc, decos);
}

/** Tiptap extension: options.previousText is the text of the version before;
 * options.authorOf(k) who wrote character k of the shown text; options.deletedBy who
 * made the change. */
export const ChangeMarks = Extension.create({
  name: "changeMarks",
  addOptions() {
    return { previousText: null, authorOf: null, deletedBy: null };
  },
  addProseMirrorPlugins() {
    const { previousText, authorOf, deletedBy } = this.options;
    let cached = null;
    return [
      new Plugin({
        key: new PluginKey("changeMarks"),
        props: {
          decorations(state) {
            if (previousText === null) return null;
            if (cached === null || cached.doc !== state.doc) cached = { doc: state.doc, set: decorations(state.doc, previousText, authorOf, deletedBy) };
            return cached.set;
          },
        },
      }),
    ];
  },
});
