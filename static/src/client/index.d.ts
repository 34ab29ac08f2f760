// The public API of @collab/client (index.js), for TypeScript and editors.
// docs/CLIENT.md ("The browser client") describes it; the package's test checks that
// every member declared here exists at run time.

import type * as Y from "yjs";
import type { Awareness } from "y-protocols/awareness";
import type { ObservableV2 } from "lib0/observable";

/** The version of the native protocol this client speaks (sent in `hello`). */
export declare const PROTOCOL_VERSION: 1;

/** Connection states, in the order a page usually sees them. */
export declare const ConnectionState: Readonly<{
  /** The first connection is being opened. */
  CONNECTING: "connecting";
  ONLINE: "online";
  /** The connection was lost; trying again with backoff. */
  RECONNECTING: "reconnecting";
  /** The browser says it has no network; trying again when it has. */
  OFFLINE: "offline";
  /** Closed by the page (`destroy()`), or refused for good (see `refusal`). */
  CLOSED: "closed";
}>;
export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState];

/** What `CollabClient.trySend` did with a message. */
export declare const Sent: Readonly<{
  SENT: "sent";
  /** No session: nothing was sent. */
  NOT_ONLINE: "not_online";
  /** Larger than the server accepts (`maxFrameBytes`): nothing was sent. */
  TOO_BIG: "too_big";
}>;
export type Sent = (typeof Sent)[keyof typeof Sent];

/** This page's id: the owner of the outbox entries it writes, the holder of a Web Lock. */
export declare const TAB_ID: string;

/** What the client needs of a WebSocket (the browser's, or a substitute such as the
 * `ws` package's under Node). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export interface CollabClientOptions {
  /** An access token, sent in `hello`. */
  token?: string | null;
  /** Recorded as the `client` of every update (history); the server's `ws:<id>` when null. */
  clientLabel?: string | null;
  /** Reconnect delays: exponential from the first, capped at the second, with full jitter. Defaults 250, 5000. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** An application ping every `heartbeatMs` (5000); one unanswered for `heartbeatTimeoutMs` (8000), with nothing heard since, drops the connection. */
  heartbeatMs?: number;
  heartbeatTimeoutMs?: number;
  /** For opening the socket and the `hello` (10000). */
  connectTimeoutMs?: number;
  /** Announced in `hello` (64 MiB): a larger sync comes in parts. */
  maxMessageBytes?: number;
  /** The WebSocket class to use (`globalThis.WebSocket`). */
  WebSocket?: new (url: string) => WebSocketLike;
}

/** A message to the server (docs/PROTOCOL.md): its `type` and fields. */
export interface ClientMessage {
  type: string;
  [field: string]: unknown;
}

/** The server's `welcome`: the session is accepted. */
export interface Welcome {
  type: "welcome";
  version: number;
  server: string;
  instance: string;
  /** `max_frame_bytes`, `max_documents`, `ping_interval_s`...; unknown keys may be added. */
  limits: { max_frame_bytes?: number; [limit: string]: unknown };
  /** The token's subject; absent when authentication is off. */
  user?: string;
  expires_s?: number;
}

/** An error: the server's `error` message (`forbidden`, `read_only`, `overloaded`...),
 * or one the client makes (`too_large`). */
export interface CollabError {
  code: string;
  message: string;
  doc?: string;
  ref?: number;
  [field: string]: unknown;
}

/** Why a client stopped reconnecting: the server's error, or a close code 4400-4499. */
export type Refusal = CollabError | { code: "closed"; message: string; close: number };

export interface CollabClientEvents {
  /** The connection state changed. */
  state: (state: ConnectionState) => void;
  /** Anything a connection indicator shows changed (state, RTT, queued). */
  status: () => void;
  /** The server accepted the session. */
  welcome: (message: Welcome) => void;
  /** The server refused for good (a bad token): no more reconnects. */
  refused: (error: CollabError) => void;
}

/** One WebSocket to a collab server's `/ws`, shared by every document the page opens:
 * heartbeats, reconnection with backoff and jitter, a fresh subscription of every
 * document after each reconnection. It connects at once. */
export declare class CollabClient extends ObservableV2<CollabClientEvents> {
  constructor(url: string, options?: CollabClientOptions);
  readonly url: string;
  readonly options: Required<CollabClientOptions>;
  readonly state: ConnectionState;
  /** The round-trip time of the latest heartbeat. */
  readonly rttMs: number | null;
  /** The token's subject, from `welcome`. */
  readonly user: string | null;
  readonly welcome: Welcome | null;
  /** The error or close that stopped reconnecting. */
  readonly refusal: Refusal | null;
  /** Why the last connection ended or failed. */
  readonly lastError: string | null;
  /** Connections opened so far. */
  readonly connections: number;
  /** The open documents, by name. */
  readonly providers: ReadonlyMap<string, DocumentProvider>;
  get online(): boolean;
  /** Edits not yet acknowledged by the server, over every document. */
  get queued(): number;
  /** The largest frame the server accepts (`welcome.limits.max_frame_bytes`; 8 MiB
   * before a welcome, less after a 1009 close below it). */
  get maxFrameBytes(): number;
  /** Sends one message if the session is open and the server accepts its size. */
  trySend(message: ClientMessage): Sent;
  /** Sends one message if the session is open; whether it was sent. */
  send(message: ClientMessage): boolean;
  /** Reconnects now (with a new token, say), also after a refusal. */
  reconnect(options?: CollabClientOptions): void;
  /** Closes every document and the socket; no more reconnects. */
  destroy(): void;
}

export interface DocumentProviderOptions {
  /** The document to keep in sync (a new Y.Doc by default). */
  doc?: Y.Doc;
  /** Keep the document and its outbox in IndexedDB (default: when IndexedDB exists). */
  persist?: boolean;
}

export type Role = "write" | "read";

/** Bytes of a large sync received so far, while it arrives in parts. */
export interface SyncProgress {
  received: number;
  total: number;
}

/** Everything a connection indicator shows. */
export interface ProviderStatus {
  connection: ConnectionState;
  synced: boolean;
  queued: number;
  saved: boolean;
  /** The copy holds an edit the server refused, until the resync that follows. */
  refused: boolean;
  rttMs: number | null;
  role: Role | null;
  progress: SyncProgress | null;
  error: CollabError | null;
}

/** The provider holds a new Y.Doc and Awareness: rebind the editor to them. */
export interface ResetEvent {
  doc: Y.Doc;
  awareness: Awareness;
  /** Unacknowledged edits not in the new document ("epoch" resets only). */
  dropped: number;
  /** The replaced copy holding them (also `oldCopy`), or null. */
  oldDoc: Y.Doc | null;
  /** "epoch": the server's document has another epoch (deleted and recreated, restored);
   * "resync": an edit was refused and the copy was taken afresh from the server. */
  reason: "epoch" | "resync";
}

/** An edit kept until the server acknowledges it. */
export interface OutboxEntry {
  /** The tab that made it (`TAB_ID`). */
  owner: string;
  n: number;
  epoch: string | null;
  update: Uint8Array;
  /** Edits merged into it. */
  count: number;
}

export interface DocumentProviderEvents {
  /** Anything in `status` changed. */
  status: () => void;
  synced: (synced: boolean) => void;
  /** Every local edit is (or no longer is) acknowledged. */
  saved: (saved: boolean) => void;
  /** A large sync is arriving in parts. */
  progress: (progress: SyncProgress) => void;
  reset: (event: ResetEvent) => void;
  /** The server refused the document or an edit; an edit refused for good is undone
   * (a `reset` with reason "resync" follows). */
  error: (error: CollabError) => void;
}

/** Keeps a Y.Doc in sync with the server's document `name` over `client`: acknowledged
 * edits, an outbox kept in IndexedDB, awareness, the tabs of one browser kept in step. */
export declare class DocumentProvider extends ObservableV2<DocumentProviderEvents> {
  constructor(client: CollabClient, name: string, options?: DocumentProviderOptions);
  readonly client: CollabClient;
  readonly name: string;
  /** The document; replaced on a reset (see the `reset` event). */
  readonly doc: Y.Doc;
  /** Presence (y-protocols); replaced on a reset. */
  readonly awareness: Awareness;
  /** Resolves once the copy kept in this browser is in `doc` (the provider subscribes then). */
  readonly whenLoaded: Promise<void>;
  /** The copy kept in this browser is in `doc`. */
  readonly loaded: boolean;
  /** The document's generation (its epoch), null before the first sync. */
  readonly epoch: string | null;
  /** Every update of the document up to this seq is in `doc`. */
  readonly seq: number;
  readonly role: Role | null;
  /** The current connection's sync is complete. */
  readonly synced: boolean;
  /** Why the server refused the document (`forbidden`...). */
  readonly error: CollabError | null;
  readonly syncProgress: SyncProgress | null;
  /** How the last sync came: "diff", "log" or "reset". */
  readonly syncMode: string | null;
  /** Frames the last sync came in. */
  readonly syncParts: number;
  /** Edits the server refused for good (the latest 100). */
  readonly refused: readonly OutboxEntry[];
  /** Resets so far. */
  readonly resets: number;
  /** After a reset that dropped unacknowledged edits: the replaced copy holding them. */
  readonly oldCopy: { doc: Y.Doc; dropped: number } | null;
  /** The document and its outbox are kept in IndexedDB. */
  get persist(): boolean;
  /** Edits of the document made in this browser (this tab and its others) not yet
   * acknowledged; merged edits count one each. */
  get queued(): number;
  /** This tab's share of `queued`: the edits this tab sends. */
  get ownQueued(): number;
  /** Every edit made in this browser is acknowledged, and the copy holds no refused edit. */
  get saved(): boolean;
  get destroyed(): boolean;
  get readOnly(): boolean;
  get status(): ProviderStatus;
  /** Resolves once the outbox writes so far are done: those edits survive closing the tab. */
  whenPersisted(): Promise<void>;
  /** Resolves once every local edit made so far is acknowledged. */
  whenSaved(): Promise<void>;
  /** Forgets `oldCopy`. */
  dismissOldCopy(): void;
  /** Leaves the document; the copy stays in IndexedDB, unsent edits are left to the
   * next tab (or provider in this tab) of the document. */
  destroy(): void;
}
