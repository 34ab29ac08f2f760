// collab's browser client: a Yjs provider for the native protocol (/ws).
// docs/CLIENT.md ("The browser client") describes the API.
export { CollabClient, ConnectionState, PROTOCOL_VERSION } from "./client.js";
export { DocumentProvider, TAB_ID } from "./provider.js";
