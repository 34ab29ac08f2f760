// The document page: a Tiptap editor bound to the document through the provider,
// remote cursors and selections, who is here, the connection indicator, and the
// history panel.
import { Editor } from "@tiptap/core";
import StarterKit from "@tiptap/starter-kit";
import Collaboration from "@tiptap/extension-collaboration";
import CollaborationCaret from "@tiptap/extension-collaboration-caret";
import { DocumentProvider } from "../client/index.js";
import { h } from "./dom.js";
import { openHistory } from "./history.js";
import { getToken, getUser, roleFor, setUserName, subjectOf, userForToken } from "./session.js";

function caret(user) {
  const cursor = h("span", { class: "collaboration-carets__caret", style: `border-color: ${user.color}`, dataset: { user: user.id ?? "" } });
  cursor.append(h("span", { class: "collaboration-carets__label", style: `background-color: ${user.color}` }, user.name ?? "someone"));
  return cursor;
}

function connectionText(status, provider) {
  const parts = [];
  const state = status.connection === "online" && !status.synced ? "syncing" : status.connection;
  parts.push({ online: "Online", syncing: "Syncing…", connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline", closed: "Disconnected" }[state] ?? state);
  if (status.progress) parts.push(`${Math.floor((100 * status.progress.received) / Math.max(1, status.progress.total))} % loaded`);
  parts.push(status.queued === 0 ? "all changes saved" : `${status.queued} ${status.queued === 1 ? "edit" : "edits"} not saved yet`);
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

  const indicator = h("p", { id: "connection", class: "connection", role: "status", "aria-live": "polite" });
  const presence = h("ul", { id: "presence", class: "presence", "aria-label": "Who is here" });
  const editorBox = h("div", { id: "editor", class: "editor" });
  const banner = h("p", { id: "banner", class: "banner", role: "alert", hidden: true });
  const historyButton = h("button", { type: "button", id: "history-open", "aria-expanded": "false", "aria-controls": "history" }, "History");
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
        historyButton,
      ),
      h("div", { class: "doc-bar" }, indicator, h("label", { class: "you" }, "You: ", nameInput), presence),
      banner,
      h("div", { class: "doc-body" }, h("div", { class: "editor-area" }, editorBox, versionView), panel),
    ),
  );

  const showRole = () => {
    const readOnly = provider.role === "read" || (provider.role === null && roleFor(token, name) === "read");
    editor?.setEditable(!readOnly);
    editorBox.classList.toggle("read-only", readOnly);
    editorBox.setAttribute("aria-readonly", String(readOnly));
    if (readOnly) {
      banner.textContent = "You can read this document but not change it.";
      banner.hidden = false;
    }
  };

  const makeEditor = () => {
    editor?.destroy();
    editorBox.replaceChildren();
    editor = new Editor({
      element: editorBox,
      extensions: [
        StarterKit.configure({ undoRedo: false }), // Collaboration brings its own undo
        Collaboration.configure({ document: provider.doc }),
        CollaborationCaret.configure({ provider, user: { name: user.name, color: user.color, id: user.id }, render: caret }),
      ],
      editorProps: { attributes: { "aria-label": `Document ${name}`, "aria-multiline": "true", role: "textbox", spellcheck: "true" } },
    });
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
    presence.replaceChildren(
      ...[...people.entries()].map(([id, p]) =>
        h(
          "li",
          { dataset: { userId: id, tabs: String(p.tabs) }, title: p.tabs > 1 ? `${p.tabs} tabs` : "" },
          h("span", { class: "dot", style: `background: ${/^#[0-9a-f]{6}$/i.test(p.user.color) ? p.user.color : "#888"}`, "aria-hidden": "true" }),
          p.user.name + (p.me ? " (you)" : ""),
          p.tabs > 1 ? h("span", { class: "tabs" }, ` ×${p.tabs}`) : null,
        ),
      ),
    );
  };

  const renderStatus = () => {
    const { state, text } = connectionText(provider.status, provider);
    indicator.dataset.state = state;
    indicator.dataset.queued = String(provider.queued);
    indicator.dataset.synced = String(provider.synced);
    indicator.textContent = text;
  };

  const onStatus = () => renderStatus();
  const onError = (error) => {
    banner.textContent = error.message ?? String(error);
    banner.hidden = false;
    if (error.code === "forbidden") needToken("Your access token does not open this document.");
  };
  const onReset = () => {
    makeEditor();
    provider.awareness.on("change", renderPresence);
    renderPresence();
    announce("This document was recreated on the server; showing its new content.");
  };
  const onWelcome = () => {
    if (client.user && user.id !== client.user) {
      user = userForToken(client.user);
      nameInput.value = user.name;
      nameInput.disabled = true;
      editor?.commands.updateUser({ name: user.name, color: user.color, id: user.id });
    }
  };
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

  nameInput.addEventListener("change", () => {
    user = setUserName(nameInput.value);
    nameInput.value = user.name;
    editor?.commands.updateUser({ name: user.name, color: user.color, id: user.id });
  });

  historyButton.addEventListener("click", () => {
    if (closeHistory) {
      closeHistory();
      return;
    }
    historyButton.setAttribute("aria-expanded", "true");
    editorBox.hidden = true;
    closeHistory = openHistory({
      name,
      panel,
      view: versionView,
      canRestore: provider.role !== "read" && roleFor(token, name) !== "read",
      announce,
      onClose: () => {
        closeHistory = null;
        historyButton.setAttribute("aria-expanded", "false");
        editorBox.hidden = false;
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
    client.off("status", onStatus);
    client.off("welcome", onWelcome);
    editor?.destroy();
    provider.destroy();
    onLeave?.();
  };
}
