// The formatting toolbar: buttons for what StarterKit's commands do (bold, italic,
// headings, lists, link, code), each saying whether it applies where the cursor is
// (aria-pressed), in one tab stop with the arrow keys between them (a toolbar).
import { h } from "./dom.js";

const BUTTONS = [
  { id: "bold", label: "Bold", text: "B", keys: "Ctrl+B", run: (c) => c.toggleBold(), active: (e) => e.isActive("bold") },
  { id: "italic", label: "Italic", text: "I", keys: "Ctrl+I", run: (c) => c.toggleItalic(), active: (e) => e.isActive("italic") },
  { id: "heading1", label: "Heading 1", text: "H1", keys: "Ctrl+Alt+1", run: (c) => c.toggleHeading({ level: 1 }), active: (e) => e.isActive("heading", { level: 1 }) },
  { id: "heading2", label: "Heading 2", text: "H2", keys: "Ctrl+Alt+2", run: (c) => c.toggleHeading({ level: 2 }), active: (e) => e.isActive("heading", { level: 2 }) },
  { id: "bullets", label: "Bulleted list", text: "• List", keys: "Ctrl+Shift+8", run: (c) => c.toggleBulletList(), active: (e) => e.isActive("bulletList") },
  { id: "numbers", label: "Numbered list", text: "1. List", keys: "Ctrl+Shift+7", run: (c) => c.toggleOrderedList(), active: (e) => e.isActive("orderedList") },
  { id: "link", label: "Link", text: "Link", keys: null, run: null, active: (e) => e.isActive("link") },
  { id: "code", label: "Code", text: "</>", keys: "Ctrl+E", run: (c) => c.toggleCode(), active: (e) => e.isActive("code") },
];

/** Asks for an address and links the selection to it (or unlinks a link). */
function toggleLink(editor) {
  if (editor.isActive("link")) {
    editor.chain().focus().extendMarkRange("link").unsetLink().run();
    return;
  }
  const href = globalThis.prompt("Link to (an address such as https://example.com):", "https://");
  if (!href || href === "https://") {
    editor.commands.focus();
    return;
  }
  const chain = editor.chain().focus().extendMarkRange("link");
  // With nothing selected, the address itself becomes the linked text.
  if (editor.state.selection.empty) chain.insertContent({ type: "text", text: href, marks: [{ type: "link", attrs: { href } }] }).run();
  else chain.setLink({ href }).run();
}

/** The toolbar for `editor` (it follows the editor's selection until destroyed). */
export function formattingToolbar(editor) {
  const buttons = BUTTONS.map((b) => {
    const button = h(
      "button",
      {
        type: "button",
        id: `format-${b.id}`,
        class: `format format-${b.id}`,
        "aria-label": b.label,
        "aria-pressed": "false",
        title: b.keys ? `${b.label} (${b.keys})` : b.label,
        tabindex: "-1",
        // Keeps the editor's selection: the click formats it, not an empty one.
        onmousedown: (event) => event.preventDefault(),
        onclick: () => (b.run === null ? toggleLink(editor) : b.run(editor.chain().focus()).run()),
      },
      b.text,
    );
    return { spec: b, button };
  });
  buttons[0].button.tabIndex = 0;
  const bar = h("div", { role: "toolbar", id: "toolbar", class: "toolbar", "aria-label": "Formatting", "aria-controls": "editor" }, ...buttons.map((b) => b.button));
  // Arrow keys move between the buttons; Tab leaves the toolbar (one tab stop).
  bar.addEventListener("keydown", (event) => {
    const i = buttons.findIndex((b) => b.button === document.activeElement);
    if (i < 0) return;
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: buttons.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    const target = buttons[(next + buttons.length) % buttons.length].button;
    for (const b of buttons) b.button.tabIndex = -1;
    target.tabIndex = 0;
    target.focus();
  });
  const update = () => {
    if (editor.isDestroyed) return;
    for (const { spec, button } of buttons) button.setAttribute("aria-pressed", String(spec.active(editor)));
  };
  editor.on("transaction", update);
  update();
  return bar;
}
