// An application's TypeScript against @collab/client's declarations (index.d.ts):
// tests/test_client_package.py type-checks it with tsc --noEmit (strict) in an
// application that installed the packed package, then bundles it with esbuild.
import * as Y from "yjs";
import {
  CollabClient,
  ConnectionState,
  DocumentProvider,
  PROTOCOL_VERSION,
  Sent,
  TAB_ID,
  type CollabError,
  type ProviderStatus,
  type ResetEvent,
  type WebSocketLike,
} from "@collab/client";

const client = new CollabClient("ws://127.0.0.1:8000/ws", { token: "a-token", backoffMaxMs: 10_000 });
const provider = new DocumentProvider(client, "team/notes", { doc: new Y.Doc(), persist: false });

provider.on("status", () => {
  const status: ProviderStatus = provider.status;
  const connection: ConnectionState = status.connection;
  const rtt: number | null = status.rttMs;
  console.log(connection, rtt, status.queued, status.saved, status.progress?.total);
});
provider.on("synced", (synced) => {
  const yes: boolean = synced;
  console.log(yes, provider.readOnly, provider.role === "read");
});
provider.on("reset", ({ doc, awareness, dropped, oldDoc, reason }: ResetEvent) => {
  awareness.setLocalStateField("user", { name: "Ann" });
  const kind: "epoch" | "resync" = reason;
  console.log(doc.getXmlFragment("default").length, dropped, oldDoc?.clientID, kind);
});
provider.on("error", (error: CollabError) => console.log(error.code, error.message));
client.on("state", (state) => {
  if (state === ConnectionState.OFFLINE) console.log("offline");
});
client.on("refused", (error) => console.log(error.code));

async function edit(): Promise<number> {
  await provider.whenLoaded;
  provider.doc.getText("text").insert(0, "hello");
  await provider.whenPersisted();
  await provider.whenSaved();
  const sent: Sent = client.trySend({ type: "ping", id: 1 });
  const version: 1 = PROTOCOL_VERSION;
  console.log(sent === Sent.TOO_BIG, client.send({ type: "ping", id: 2 }), version, TAB_ID.length);
  return provider.seq + client.maxFrameBytes + (client.providers.get("team/notes")?.queued ?? 0);
}

// A substitute WebSocket (the `ws` package's, say) fits the option.
declare const NodeWebSocket: new (url: string) => WebSocketLike;
new CollabClient("ws://127.0.0.1:8000/ws", { WebSocket: NodeWebSocket }).destroy();

// Misuse the declarations must refuse (each line is an error, or tsc fails):
// @ts-expect-error the document is the provider's to replace
provider.doc = new Y.Doc();
// @ts-expect-error no such event
provider.on("synched", () => {});
// @ts-expect-error a state is one of ConnectionState's
const wrong: ConnectionState = "connected";
// @ts-expect-error the name of the document is required
new DocumentProvider(client);

void edit;
void wrong;
