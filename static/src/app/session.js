// Who this browser is: an access token (from the URL fragment or a prompt) and the
// user shown to others (one name and colour for every tab of this browser).

const TOKEN_KEY = "collab.token";
export const USER_KEY = "collab.user";

function storage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null; // storage blocked by the browser's settings
  }
}

export function getToken() {
  return storage()?.getItem(TOKEN_KEY) || null;
}

export function setToken(token) {
  if (token) storage()?.setItem(TOKEN_KEY, token);
  else storage()?.removeItem(TOKEN_KEY);
}

/** A colour of its own for each user (a hue from a hash of the id), dark enough for
 * white text, as #rrggbb (what Tiptap's carets accept). */
function colourOf(text) {
  let hash = 2166136261;
  for (const ch of text) hash = Math.imul(hash ^ ch.codePointAt(0), 16777619);
  // Mixed, so that names alike ("ann", "amy") still get hues apart.
  hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b);
  hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35);
  const hue = ((hash ^ (hash >>> 16)) >>> 0) % 360;
  const s = 0.7;
  const l = 0.38;
  const f = (n) => {
    const k = (n + hue / 30) % 12;
    const c = l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(c * 255).toString(16).padStart(2, "0");
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

/** Colours for the people in a document, apart from each other (hue and lightness)
 * and dark enough for white text. The people present take them in the order of their
 * ids (`paletteColours`), so that every page gives the same person the same colour
 * and no two of the first ten share one (hashed hues made near twins). */
export const PALETTE = ["#1c7ed6", "#e8590c", "#2b8a3e", "#c2255c", "#6741d9", "#0b7285", "#a61e4d", "#5c940d", "#862e9c", "#495057"];

/** Each of `ids` (in any order) -> its colour from PALETTE, by the sorted order. */
export function paletteColours(ids) {
  const sorted = [...new Set(ids)].sort();
  return new Map(sorted.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
}

/** This browser's user: {id, name, color}, kept for every tab of the origin. */
export function getUser() {
  const s = storage();
  try {
    const saved = JSON.parse(s?.getItem(USER_KEY) ?? "null");
    if (saved && typeof saved.id === "string" && typeof saved.name === "string" && /^#[0-9a-f]{6}$/i.test(saved.color)) {
      return saved;
    }
  } catch {
    // a damaged entry: make a new one
  }
  const id = globalThis.crypto?.randomUUID?.() ?? Math.random().toString(36).slice(2);
  const user = { id, name: `Guest ${id.replace(/[^0-9]/g, "").slice(0, 3) || "1"}`, color: colourOf(id) };
  s?.setItem(USER_KEY, JSON.stringify(user));
  return user;
}

export function setUserName(name) {
  const user = { ...getUser(), name: name.trim().slice(0, 40) || getUser().name };
  storage()?.setItem(USER_KEY, JSON.stringify(user));
  return user;
}

/** With a token, the user is its subject: the same person in every browser. */
export function userForToken(subject) {
  const user = getUser();
  if (!subject || user.id === subject) return user;
  // The id the server stamps on this user's presence (docs/SECURITY.md): the subject.
  const named = { id: subject, name: subject.slice(0, 40), color: colourOf(subject) };
  storage()?.setItem(USER_KEY, JSON.stringify(named));
  return named;
}

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

/** The user a token names (its `sub`), read without checking it: the server does. */
export function subjectOf(token) {
  const c = token ? claims(token) : null;
  return c && typeof c.sub === "string" && c.sub ? c.sub : null;
}

function patternToRegExp(pattern) {
  // Shell-style, as the server matches grants (docs/PROTOCOL.md 4): * ? [abc] [!abc]
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*") out += "[\\s\\S]*";
    else if (c === "?") out += "[\\s\\S]";
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 2);
      if (end === -1) out += "\\[";
      else {
        let set = pattern.slice(i + 1, end);
        if (set.startsWith("!")) set = "^" + set.slice(1);
        out += "[" + set.replace(/\\/g, "\\\\") + "]";
        i = end;
      }
    } else out += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  }
  return new RegExp("^" + out + "$");
}

/** The role a token grants on a document ("write", "read" or null), as the server
 * decides it; used to show a read-only document read-only before the server says so. */
export function roleFor(token, name) {
  const c = token ? claims(token) : null;
  if (!c || typeof c.docs !== "object" || c.docs === null) return null;
  let role = null;
  for (const [pattern, granted] of Object.entries(c.docs)) {
    let matches = false;
    try {
      matches = patternToRegExp(pattern).test(name);
    } catch {
      matches = false;
    }
    if (!matches) continue;
    if (granted === "write") return "write";
    if (granted === "read") role = "read";
  }
  return role;
}
