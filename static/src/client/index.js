// collab's browser client: a Yjs provider for the native protocol (/ws).
// docs/CLIENT.md ("The browser client") describes the API; index.d.ts types it.
export { CollabClient, ConnectionState, PROTOCOL_VERSION, Sent } from "./client.js";
export { DocumentProvider } from "./provider.js";
export { TAB_ID } from "./tabs.js";
