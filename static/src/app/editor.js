// The document page: a Tiptap editor bound to the document through the provider,
// remote cursors and selections, who is here, the connection indicator, and the
// history panel.
import { Editor } from "@tiptap/core";
import StarterKit from "@tiptap/starter-kit";
import Collaboration from "@tiptap/extension-collaboration";
import CollaborationCaret from "@tiptap/extension-collaboration-caret";
import * as Y from "yjs";
import { DocumentProvider } from "../client/index.js";
import { h } from "./dom.js";
import { openAuthors } from "./authors.js";
import { openHistory, versionJSON } from "./history.js";
import { USER_KEY, getToken, getUser, paletteColours, roleFor, setUserName, subjectOf, userForToken } from "./session.js";
import { siblingTabs } from "./siblings.js";
import { formattingToolbar } from "./toolbar.js";

const isColour = (c) => typeof c === "string" && /^#[0-9a-f]{6}$/i.test(c);

/** Moves caret labels that would cover one another apart: each label that meets one
 * placed before it (left to right) goes up a row, so that close cursors keep their
 * names readable ("Bob" over "Guest 988", not "Bob ᵻt 988"). */
function spreadLabels(box) {
  const labels = [...box.querySelectorAll(".collaboration-carets__label")];
  for (const label of labels) label.style.transform = "";
  const placed = [];
  const boxes = labels.map((label) => ({ label, rect: label.getBoundingClientRect() })).sort((a, b) => a.rect.top - b.rect.top || a.rect.left - b.rect.left);
  for (const { label, rect } of boxes) {
    if (rect.width === 0) continue;
    let shift = 0;
    const meets = (r) => placed.some((p) => r.left < p.right && p.left < r.right && r.top - shift < p.bottom && p.top < r.bottom - shift);
    while (meets(rect) && shift < 20 * rect.height) shift += rect.height + 1;
    if (shift > 0) label.style.transform = `translateY(-${shift}px)`;
    placed.push({ left: rect.left, right: rect.right, top: rect.top - shift, bottom: rect.bottom - shift });
  }
}

/** The text of the editor's content in `doc`: its blocks, one a line. */
export function plainText(doc) {
  const walk = (node) => (node instanceof Y.XmlText ? node.toString().replace(/<[^>]*>/g, "") : node.toArray().map(walk).join(""));
  return doc
    .getXmlFragment("default")
    .toArray()
    .map(walk)
    .join("\n");
}

function connectionText(status, provider, siblingsOffline) {
  const parts = [];
  let state = status.connection === "online" && !status.synced ? "syncing" : status.connection;
  if (siblingsOffline && (state === "reconnecting" || state === "connecting")) state = "offline";
  if (status.error !== null) state = "refused";
  parts.push({ online: "Online", syncing: "Syncing…", connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline", closed: "Disconnected", refused: "Not opened" }[state] ?? state);
  if (status.progress) parts.push(`${Math.floor((100 * status.progress.received) / Math.max(1, status.progress.total))} % loaded`);
  if (status.refused) parts.push("an edit was refused: reloading");
  else parts.push(status.saved ? "all changes saved" : `${status.queued} ${status.queued === 1 ? "edit" : "edits"} not saved yet`);
  if (status.connection === "online" && status.rttMs !== null) parts.push(`${Math.round(status.rttMs)} ms`);
  if (provider.readOnly) parts.push("read-only");
  return { state, text: parts.join(" · ") };
}

export function documentView(root, { name, client, announce, needToken, onLeave }) {
  const token = getToken();
  const subject = client.user ?? subjectOf(token);
  let user = subject ? userForToken(subject) : getUser();
  const provider = new DocumentProvider(client, name);
  let editor = null;
  let closeHistory = null;
  // The colour of each person present (by user id), from the palette by their order.
  let colours = new Map();
  const colourOf = (u) => colours.get(u?.id) ?? (isColour(u?.color) ? u.color : "#495057");
  const caret = (u) => {
    const colour = colourOf(u);
    const cursor = h("span", { class: "collaboration-carets__caret", style: `border-color: ${colour}`, dataset: { user: u.id ?? "" } });
    cursor.append(h("span", { class: "collaboration-carets__label", style: `background-color: ${colour}` }, u.name ?? "someone"));
    return cursor;
  };
  const selection = (u) => ({ style: `background-color: ${colourOf(u)}33`, class: "ProseMirror-yjs-selection" });
  let spreading = 0;
  const spreadSoon = () => {
    cancelAnimationFrame(spreading);
    spreading = requestAnimationFrame(() => spreadLabels(editorBox));
  };

  // Not a live region: its round-trip time and counts change all the time. A change of
  // state is announced instead (`announceState`).
  const indicator = h("p", { id: "connection", class: "connection" });
  const presence = h("ul", { id: "presence", class: "presence", "aria-label": "Who is here" });
  const editorBox = h("div", { id: "editor", class: "editor" });
  const toolbarBox = h("div", { class: "toolbar-box" });
  // What happened that the user should see (a restore, theirs or someone else's).
  const notice = h("p", { id: "notice", class: "notice", role: "status", hidden: true });
  const banner = h("p", { id: "banner", class: "banner", role: "alert", hidden: true });
  const recover = h("div", { id: "recover", class: "banner", role: "alert", hidden: true });
  const roleNote = h("p", { id: "role-note", class: "banner", hidden: true }, "You can read this document but not change it.");
  const historyButton = h("button", { type: "button", id: "history-open", "aria-expanded": "false", "aria-controls": "history" }, "History");
  const authorsButton = h("button", { type: "button", id: "authors-open", "aria-pressed": "false" }, "Show authors");
  let closeAuthors = null;
  const nameInput = h("input", { type: "text", id: "user-name", value: user.name, "aria-label": "Your name", maxlength: 40, disabled: Boolean(subject) });
  const panel = h("aside", { id: "history", class: "history", "aria-labelledby": "history-title", hidden: true });
  const versionView = h("div", { class: "version-view", hidden: true });
  root.replaceChildren(
    h(
      "section",
      { class: "document", "aria-labelledby": "doc-title" },
      h(
        "header",
        { class: "doc-header" },
        h("a", { href: "#/", class: "back", "aria-label": "All documents" }, "←"),
        h("h1", { id: "doc-title" }, name),
        authorsButton,
        historyButton,
      ),
      h("div", { class: "doc-bar" }, indicator, h("label", { class: "you" }, "You: ", nameInput), presence),
      roleNote,
      banner,
      recover,
      notice,
      h("div", { class: "doc-body" }, h("div", { class: "editor-area" }, toolbarBox, editorBox, versionView), panel),
    ),
  );

  const showRole = () => {
    const readOnly = provider.role === "read" || (provider.role === null && roleFor(token, name) === "read");
    editor?.setEditable(!readOnly);
    editorBox.classList.toggle("read-only", readOnly);
    editorBox.setAttribute("aria-readonly", String(readOnly));
    roleNote.hidden = !readOnly;
    toolbarBox.hidden = readOnly || closeHistory !== null || closeAuthors !== null;
  };

  const makeEditor = () => {
    editor?.destroy();
    editorBox.replaceChildren();
    editor = new Editor({
      element: editorBox,
      extensions: [
        StarterKit.configure({ undoRedo: false }), // Collaboration brings its own undo
        Collaboration.configure({ document: provider.doc }),
        CollaborationCaret.configure({ provider, user: { name: user.name, color: user.color, id: user.id }, render: caret, selectionRender: selection }),
      ],
      editorProps: { attributes: { "aria-label": `Document ${name}`, "aria-multiline": "true", role: "textbox", spellcheck: "true" } },
    });
    editor.on("transaction", spreadSoon);
    toolbarBox.replaceChildren(formattingToolbar(editor));
    showRole();
  };

  const renderPresence = () => {
    // One person per user, however many tabs they have open (each tab is an
    // awareness client of its own, with its own cursor).
    const people = new Map();
    for (const [clientId, state] of provider.awareness.getStates()) {
      const u = state?.user;
      if (!u || typeof u.name !== "string") continue;
      const key = typeof u.id === "string" ? u.id : `client:${clientId}`;
      const person = people.get(key) ?? { user: u, tabs: 0, me: false };
      person.tabs += 1;
      if (clientId === provider.doc.clientID) person.me = true;
      people.set(key, person);
    }
    colours = paletteColours(people.keys());
    // A caret's label is drawn once per client: a new name and colour are written into
    // it here.
    for (const label of editorBox.querySelectorAll(".collaboration-carets__caret")) {
      const person = people.get(label.dataset.user);
      const text = label.querySelector(".collaboration-carets__label");
      if (person && text && text.textContent !== person.user.name) text.textContent = person.user.name;
      const colour = colours.get(label.dataset.user);
      if (colour) {
        label.style.borderColor = colour;
        if (text) text.style.backgroundColor = colour;
      }
    }
    spreadSoon();
    presence.replaceChildren(
      ...[...people.entries()].map(([id, p]) =>
        h(
          "li",
          { dataset: { userId: id, tabs: String(p.tabs) }, title: p.tabs > 1 ? `${p.tabs} tabs` : "" },
          h("span", { class: "dot", style: `background: ${colours.get(id) ?? "#888"}`, "aria-hidden": "true" }),
          p.user.name + (p.me ? " (you)" : ""),
          p.tabs > 1 ? h("span", { class: "tabs" }, ` ×${p.tabs}`) : null,
        ),
      ),
    );
  };

  // What a screen reader is told: the connection's state when it changes (once it
  // settles: a reconnection that succeeds at once is not announced).
  const STATE_WORDS = { online: "Online.", offline: "Offline: your edits are kept in this browser.", reconnecting: "Connection lost: reconnecting.", closed: "Disconnected.", refused: "This document could not be opened." };
  let announcedState = null;
  let stateTimer = null;
  const announceState = (state) => {
    if (!(state in STATE_WORDS)) return;
    clearTimeout(stateTimer);
    stateTimer = setTimeout(() => {
      if (announcedState === null) announcedState = state; // the first state is the page's own
      else if (state !== announcedState) {
        announcedState = state;
        announce(STATE_WORDS[state]);
      }
    }, 1500);
  };
  const renderStatus = () => {
    const { state, text } = connectionText(provider.status, provider, siblings.offline);
    if (state !== indicator.dataset.state) announceState(state);
    indicator.dataset.state = state;
    indicator.dataset.queued = String(provider.queued);
    indicator.dataset.synced = String(provider.synced);
    indicator.textContent = text;
  };

  const onStatus = () => {
    renderStatus();
    if (provider.oldCopy === null && !recover.hidden) showOldCopy();
  };
  const onError = (error) => {
    banner.textContent = error.message ?? String(error);
    banner.hidden = false;
    if (error.code === "forbidden") needToken("Your access token does not open this document.");
  };
  const showOldCopy = () => {
    const old = provider.oldCopy;
    if (old === null) {
      recover.hidden = true;
      recover.replaceChildren();
      return;
    }
    const download = () => {
      const url = URL.createObjectURL(new Blob([plainText(old.doc)], { type: "text/plain;charset=utf-8" }));
      const link = h("a", { href: url, download: `${name.replace(/[^\w.-]+/g, "_")}-unsaved.txt` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    };
    const n = old.dropped;
    recover.replaceChildren(
      h("span", {}, `This document was recreated on the server. Your ${n} unsaved ${n === 1 ? "edit is" : "edits are"} not in it: the copy that held ${n === 1 ? "it" : "them"} is kept until you leave this page.`),
      " ",
      h("button", { type: "button", id: "recover-download", onclick: download }, "Download my unsaved copy"),
      " ",
      h("button", { type: "button", id: "recover-dismiss", onclick: () => provider.dismissOldCopy() }, "Dismiss"),
    );
    recover.hidden = false;
  };
  const onReset = ({ reason }) => {
    makeEditor();
    provider.awareness.on("change", renderPresence);
    renderPresence();
    showOldCopy();
    if (reason === "resync") announce("The document was reloaded from the server.");
    else announce("This document was recreated on the server; showing its new content.");
  };
  const onWelcome = () => {
    if (client.user && user.id !== client.user) {
      user = userForToken(client.user);
      nameInput.value = user.name;
      nameInput.disabled = true;
      editor?.commands.updateUser({ name: user.name, color: user.color, id: user.id });
    }
  };
  const siblings = siblingTabs(client, () => renderStatus());
  provider.on("status", onStatus);
  provider.on("synced", () => {
    showRole();
    renderStatus();
  });
  provider.on("error", onError);
  provider.on("reset", onReset);
  client.on("status", onStatus);
  client.on("welcome", onWelcome);
  provider.awareness.on("change", renderPresence);

  // A name changed in another tab of this browser (the same guest).
  const onStorage = (event) => {
    if (event.key !== USER_KEY || subject) return;
    user = getUser();
    nameInput.value = user.name;
    editor?.commands.updateUser({ name: user.name, color: user.color, id: user.id });
    relabel();
  };
  globalThis.addEventListener("storage", onStorage);

  // Without a token, the history names a guest's edits by the connection's client
  // label: a new name is a new label, from the next edit on.
  const relabel = () => {
    if (!subject && client.options.clientLabel !== `web:${user.name}`) client.reconnect({ clientLabel: `web:${user.name}` });
  };
  nameInput.addEventListener("change", () => {
    user = setUserName(nameInput.value);
    nameInput.value = user.name;
    editor?.commands.updateUser({ name: user.name, color: user.color, id: user.id });
    relabel();
  });

  let noticeTimer = null;
  const showNotice = (text) => {
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => (notice.hidden = true), 15000);
  };
  // A restore is told to the others through presence: who restored which version.
  const restoresSeen = new Map(); // awareness client id -> the restore last seen
  const onRestoreNews = ({ added, updated }) => {
    const states = provider.awareness.getStates();
    for (const id of [...added, ...updated]) {
      const r = states.get(id)?.restored;
      if (!r || typeof r.seq !== "number") continue;
      const key = `${r.seq}:${r.at}`;
      const known = restoresSeen.get(id);
      restoresSeen.set(id, key);
      // A restore made before this page saw its maker is old news.
      if (added.includes(id) || known === key || id === provider.doc.clientID) continue;
      const who = states.get(id)?.user?.name ?? "Someone";
      showNotice(`${who} restored version ${r.seq}: the text changed for everyone.`);
    }
  };
  provider.awareness.on("change", onRestoreNews);

  const hideAuthors = () => {
    if (!closeAuthors) return;
    closeAuthors();
    closeAuthors = null;
    authorsButton.setAttribute("aria-pressed", "false");
    authorsButton.textContent = "Show authors";
    editorBox.hidden = false;
    showRole();
  };
  authorsButton.addEventListener("click", () => {
    if (closeAuthors) {
      hideAuthors();
      return;
    }
    closeHistory?.();
    authorsButton.setAttribute("aria-pressed", "true");
    authorsButton.textContent = "Hide authors";
    editorBox.hidden = true;
    toolbarBox.hidden = true;
    closeAuthors = openAuthors({ name, view: versionView, versionJSON: (seq) => versionJSON(name, seq) });
  });

  historyButton.addEventListener("click", () => {
    if (closeHistory) {
      closeHistory();
      return;
    }
    hideAuthors();
    historyButton.setAttribute("aria-expanded", "true");
    editorBox.hidden = true;
    toolbarBox.hidden = true;
    closeHistory = openHistory({
      name,
      panel,
      view: versionView,
      canRestore: provider.role !== "read" && roleFor(token, name) !== "read",
      announce,
      onRestored: ({ seq, changed }) => {
        showNotice(changed ? `You restored version ${seq}: everyone now has that text (the text before stays in the history).` : `The document already was version ${seq}: nothing changed.`);
        if (changed) provider.awareness.setLocalStateField("restored", { seq, at: Date.now() });
      },
      onClose: () => {
        closeHistory = null;
        historyButton.setAttribute("aria-expanded", "false");
        editorBox.hidden = false;
        showRole();
        historyButton.focus();
      },
    });
  });

  renderStatus();
  if (globalThis.collab) globalThis.collab.provider = provider; // for the console and tests
  provider.whenLoaded.then(() => {
    if (provider.destroyed) return;
    makeEditor();
    renderPresence();
    renderStatus();
    editor.commands.focus("end");
  });

  return () => {
    closeHistory?.();
    hideAuthors();
    client.off("status", onStatus);
    client.off("welcome", onWelcome);
    siblings.close();
    provider.awareness.off("change", onRestoreNews);
    clearTimeout(noticeTimer);
    cancelAnimationFrame(spreading);
    globalThis.removeEventListener("storage", onStorage);
    clearTimeout(stateTimer);
    editor?.destroy();
    provider.destroy();
    onLeave?.();
  };
}
