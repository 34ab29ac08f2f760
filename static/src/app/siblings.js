// What the other tabs of this browser know of the network. A tab that came up while
// the network was away may not be told so (Chromium can start a reloaded tab with
// navigator.onLine true and no `offline` event, while its other tabs say offline):
// such a tab, still trying to reach the server, says "Offline" when another tab
// knows it is, instead of "Reconnecting…".
const CHANNEL = "collab.connection";

export function siblingTabs(client, onChange) {
  if (typeof BroadcastChannel !== "function") return { offline: false, close() {} };
  const channel = new BroadcastChannel(CHANNEL);
  const hint = {
    offline: false,
    close() {
      client.off("state", onState);
      channel.close();
    },
  };
  const set = (offline) => {
    if (hint.offline === offline) return;
    hint.offline = offline;
    onChange();
  };
  const tell = () => channel.postMessage({ state: client.state });
  const onState = (state) => {
    tell();
    if (state === "online") set(false);
  };
  channel.onmessage = (event) => {
    const message = event.data;
    if (message === "ask") tell();
    else if (message?.state === "offline") set(true);
    else if (message?.state === "online") set(false);
  };
  client.on("state", onState);
  channel.postMessage("ask");
  return hint;
}
