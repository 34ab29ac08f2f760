// The page: #/ lists the documents, #/d/NAME edits one. An access token may come in
// the fragment (#/d/NAME?token=JWT, or #token=JWT); it is kept for the next visits
// and taken out of the address bar.
import { CollabClient } from "../client/index.js";
import { documentView } from "./editor.js";
import { listView } from "./list.js";
import { getToken, getUser, setToken, setUserName, subjectOf } from "./session.js";

const root = document.getElementById("main");
const live = document.getElementById("announce");
let leave = null;
let client = null;

function announce(text) {
  live.textContent = "";
  // A new text node each time, so that the same message is read again.
  setTimeout(() => (live.textContent = text), 50);
}

function wsUrl() {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}

function theClient() {
  if (client === null) {
    // The label the history shows for this browser's edits when tokens are off.
    const token = getToken();
    client = new CollabClient(wsUrl(), { token, clientLabel: `web:${subjectOf(token) ?? getUser().name}` });
    client.on("refused", (error) => {
      if (error.code === "unauthorized") needToken(`The server refused the access token: ${error.message}`);
    });
  }
  return client;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "");
  const [path, query = ""] = raw.split("?");
  const params = new URLSearchParams(path.startsWith("token=") || path.startsWith("name=") ? path : query);
  const token = params.get("token");
  const name = params.get("name");
  if (token || name) {
    if (token && token !== getToken()) {
      // A link may carry someone else's token: switching who this browser is (and in
      // whose documents it writes) is asked first.
      const was = subjectOf(getToken());
      const now = subjectOf(token);
      const ask = getToken() !== null && was !== now;
      if (!ask || confirm(`This link signs you in as “${now ?? "another user"}” instead of “${was ?? "the current user"}”. Switch?`)) {
        setToken(token);
        client?.reconnect({ token });
      }
    }
    if (name) setUserName(name); // the name shown to others (without a token)
    // Keep the token out of the history and of links copied from the address bar.
    const clean = path.startsWith("token=") || path.startsWith("name=") ? "#/" : `#${path}`;
    history.replaceState(null, "", clean);
    return parseHash();
  }
  // A fragment that is no route (the skip link's #main, say) leaves the page as it is.
  if (path !== "" && !path.startsWith("/")) return null;
  const match = /^\/d\/(.+)$/.exec(path);
  if (match) {
    try {
      return { view: "doc", name: decodeURIComponent(match[1]) };
    } catch {
      return { view: "list" };
    }
  }
  return { view: "list" };
}

const dialog = document.getElementById("token-dialog");

// Opened for a route (a document the token does not open): going elsewhere closes it.
let dialogRoute = null;

function needToken(reason) {
  // The latest reason shows, also when the dialog is open already.
  document.getElementById("token-reason").textContent = reason;
  dialogRoute = current;
  if (dialog.open) return;
  dialog.showModal(); // the page behind is inert until it closes (Escape closes it)
  document.getElementById("token-input").focus();
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = document.getElementById("token-input").value.trim();
  if (!token) return;
  setToken(token);
  // A new attempt: the reason of the last one no longer applies.
  document.getElementById("token-reason").textContent = "";
  document.getElementById("token-input").value = "";
  dialog.close();
  client?.reconnect({ token });
  route(true);
});
document.getElementById("token-cancel").addEventListener("click", () => dialog.close());
dialog.addEventListener("close", () => root.focus());
// The skip link moves the focus; it is no route.
document.querySelector("a.skip")?.addEventListener("click", (event) => {
  event.preventDefault();
  root.focus();
});

let current = null;
function route(force = false) {
  const target = parseHash();
  if (target === null) return;
  const key = `${target.view}:${target.name ?? ""}`;
  if (key === current && !force) return;
  current = key;
  // The dialog was about the page left: the new one asks again if it must.
  if (dialog.open && dialogRoute !== null && dialogRoute !== key) dialog.close();
  leave?.();
  leave = null;
  if (target.view === "doc") {
    document.title = `${target.name} · collab`;
    leave = documentView(root, { name: target.name, client: theClient(), announce, needToken });
  } else {
    document.title = "Documents · collab";
    leave = listView(root, {
      open: (name) => {
        location.hash = `#/d/${encodeURIComponent(name)}`;
      },
      needToken,
    });
  }
}

// For the curious, and for tests, in the console: the client and the open document's
// provider.
globalThis.collab = {
  get client() {
    return client;
  },
  provider: null,
};

window.addEventListener("hashchange", () => route());
route();

// The page itself is kept by a service worker, so that it opens without a network
// (documents are kept in IndexedDB by the provider).
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch((error) => console.info("collab: no offline page:", error.message));
}
