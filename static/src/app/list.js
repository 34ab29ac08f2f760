// The document list: create, open, search by name; recently changed first.
import { api, ApiError } from "./api.js";
import { ago, h, when } from "./dom.js";
import { getToken } from "./session.js";

const MAX_PAGES = 10; // of 1000 documents each: the list shows the 10,000 first names

async function allDocuments() {
  const documents = [];
  let after = undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const query = new URLSearchParams({ limit: "1000" });
    if (after !== undefined) query.set("after", after);
    const body = await api(`/api/documents?${query}`);
    documents.push(...body.documents);
    if (body.next_after === null || body.next_after === undefined) break;
    after = body.next_after;
  }
  return documents;
}

export function listView(root, { open, needToken }) {
  const search = h("input", { type: "search", id: "search", placeholder: "Search by name", "aria-label": "Search documents by name", autocomplete: "off" });
  const name = h("input", { type: "text", id: "new-name", placeholder: "New document name, e.g. notes/today", "aria-label": "New document name", required: true, maxlength: 200 });
  const status = h("p", { id: "list-status", role: "status" });
  const items = h("ul", { id: "documents", class: "documents" });
  const create = h(
    "form",
    {
      class: "create",
      onsubmit: (event) => {
        event.preventDefault();
        const value = name.value.trim();
        if (value) open(value);
      },
    },
    name,
    h("button", { type: "submit" }, "Create"),
  );
  root.replaceChildren(
    h("section", { class: "list", "aria-labelledby": "list-title" }, h("h1", { id: "list-title" }, "Documents"), create, search, status, items),
  );

  let documents = [];
  const render = () => {
    const needle = search.value.trim().toLowerCase();
    const shown = documents.filter((d) => d.name.toLowerCase().includes(needle));
    items.replaceChildren(
      ...shown.map((d) =>
        h(
          "li",
          { dataset: { name: d.name } },
          h("a", { href: `#/d/${encodeURIComponent(d.name)}` }, d.name),
          h("span", { class: "meta" }, h("time", { datetime: d.updated, title: when(d.updated_s) }, ago(d.updated_s)), ` · ${d.seq} updates`, d.peers ? ` · ${d.peers} here` : ""),
        ),
      ),
    );
    if (documents.length === 0) status.textContent = "No documents yet: create one.";
    else if (shown.length === 0) status.textContent = `No document name contains "${search.value.trim()}".`;
    else status.textContent = "";
  };
  search.addEventListener("input", render);

  const refresh = async () => {
    try {
      documents = (await allDocuments()).sort((a, b) => b.updated_s - a.updated_s);
      render();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        needToken(getToken() ? `The server refused the access token: ${error.message}` : "The server needs an access token to list documents.");
      }
      status.textContent = `The document list is unavailable: ${error.message}`;
    }
  };
  refresh();
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") refresh();
  }, 10000);
  name.focus();
  return () => clearInterval(timer);
}
