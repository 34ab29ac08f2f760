// One WebSocket to a collab server's native endpoint (/ws), shared by every document
// the page opens, that heals itself: application heartbeats with round-trip time,
// reconnection with exponential backoff and full jitter, a fresh subscription of
// every document after each reconnection (docs/PROTOCOL.md, docs/CLIENT.md).

import { decode, encode } from "@msgpack/msgpack";
import { ObservableV2 } from "lib0/observable";

export const PROTOCOL_VERSION = 1;

/** Connection states, in the order a page usually sees them. */
export const ConnectionState = Object.freeze({
  CONNECTING: "connecting", // the first connection is being opened
  ONLINE: "online",
  RECONNECTING: "reconnecting", // the connection was lost; trying again (with backoff)
  OFFLINE: "offline", // the browser says it has no network; trying again when it has
  CLOSED: "closed", // closed by the page, or refused for good (see `refusal`)
});

// Close codes and errors after which reconnecting cannot help (docs/PROTOCOL.md 1.8).
const isPermanentClose = (code) => code >= 4400 && code < 4500;
const PERMANENT_ERRORS = new Set(["unauthorized", "unsupported_version"]);
const STABLE_MS = 10000; // a connection up this long resets the backoff

const DEFAULTS = {
  token: null,
  clientLabel: null,
  backoffMinMs: 250,
  backoffMaxMs: 5000,
  heartbeatMs: 5000,
  heartbeatTimeoutMs: 8000,
  connectTimeoutMs: 10000,
  maxMessageBytes: 64 * 1024 * 1024,
  WebSocket: globalThis.WebSocket,
};

/**
 * A connection to `url` (ws://host/ws). Events (lib0 ObservableV2 `on`/`off`):
 * - `state` (state): a ConnectionState
 * - `status` (): anything shown in a connection indicator changed (state, RTT, queued)
 * - `welcome` (message): the server accepted the session
 * - `refused` (error): the server refused for good (a bad token); no more reconnects
 */
export class CollabClient extends ObservableV2 {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.state = ConnectionState.CONNECTING;
    this.rttMs = null;
    this.user = null; // the token's subject, from `welcome`
    this.welcome = null;
    this.refusal = null; // the error or close that stopped reconnecting
    this.lastError = null;
    this.connections = 0;
    this.providers = new Map(); // document name -> DocumentProvider
    // Documents unsubscribed on this connection whose `unsubscribed` has not come yet:
    // subscribing again before it would be refused (already_subscribed).
    this._leaving = new Set();
    this._ws = null;
    this._attempt = 0;
    this._timer = null;
    this._heartbeat = null;
    this._pings = new Map(); // ping id -> performance.now() when sent
    this._pingId = 0;
    this._lastHeard = 0;
    this._onlineSince = null;
    this._destroyed = false;
    this._onOnline = () => {
      // The network is back: an attempt made while it was away may hang until its
      // timeout; start afresh now.
      if (this._ws !== null && this.state !== ConnectionState.ONLINE) this._abandon();
      this._connectSoon(0);
    };
    this._onOffline = () => {
      if (this._destroyed || this.refusal) return;
      // The browser knows the network is gone: no need to wait for a heartbeat.
      if (this._ws !== null) this._drop("the browser went offline");
      clearTimeout(this._timer);
      this._timer = null;
      this._setState(ConnectionState.OFFLINE);
    };
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
    if (globalThis.navigator?.onLine === false) this._setState(ConnectionState.OFFLINE);
    else this._connect();
  }

  get online() {
    return this.state === ConnectionState.ONLINE;
  }

  /** Edits not yet acknowledged by the server, over every document. */
  get queued() {
    let n = 0;
    for (const p of this.providers.values()) n += p.queued;
    return n;
  }

  /** Sends one message if the session is open; returns whether it was sent. */
  send(message) {
    if (this.state !== ConnectionState.ONLINE || this._ws === null) return false;
    this._ws.send(encode(message, { ignoreUndefined: true }));
    return true;
  }

  /** Stops for good: closes the socket and never reconnects. */
  destroy() {
    this._destroyed = true;
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.removeEventListener?.("offline", this._onOffline);
    for (const p of [...this.providers.values()]) p.destroy();
    this._teardown();
    this._setState(ConnectionState.CLOSED);
    super.destroy();
  }

  /** Reconnects now (a new token, say) instead of waiting for the next attempt. */
  reconnect(options = {}) {
    Object.assign(this.options, options);
    this.refusal = null;
    if (this._ws !== null) this._drop("reconnect asked");
    this._connectSoon(0);
  }

  // -- documents ------------------------------------------------------------

  _register(provider) {
    if (this.providers.has(provider.name)) {
      throw new Error(`document ${JSON.stringify(provider.name)} is already open on this client`);
    }
    this.providers.set(provider.name, provider);
    if (this.online) provider._subscribe();
  }

  _unregister(provider) {
    if (this.providers.get(provider.name) === provider) {
      this.providers.delete(provider.name);
      this._leave(provider.name);
    }
  }

  /** Unsubscribes `name`; a provider of it subscribes again once that is done. */
  _leave(name) {
    if (this.send({ type: "unsubscribe", doc: name })) this._leaving.add(name);
  }

  _isLeaving(name) {
    return this._leaving.has(name);
  }

  // -- connection -----------------------------------------------------------

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", [state]);
    this.emit("status", []);
    for (const p of this.providers.values()) p._connectionChanged();
  }

  _connect() {
    this._timer = null;
    if (this._destroyed) return;
    let ws;
    try {
      ws = new this.options.WebSocket(this.url);
    } catch (error) {
      this.lastError = String(error);
      this._scheduleReconnect();
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this.connections += 1;
    const opened = setTimeout(() => {
      if (this._ws === ws && this.state !== ConnectionState.ONLINE) this._drop("connect timeout");
    }, this.options.connectTimeoutMs);
    ws.onopen = () => {
      const hello = {
        type: "hello",
        version: PROTOCOL_VERSION,
        client: this.options.clientLabel ?? undefined,
        token: this.options.token || undefined,
        max_frame_bytes: this.options.maxMessageBytes,
      };
      ws.send(encode(hello, { ignoreUndefined: true }));
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      this._lastHeard = performance.now();
      let message;
      try {
        message = decode(new Uint8Array(event.data));
      } catch (error) {
        console.info("collab: ignoring a frame that is not MessagePack:", error);
        return;
      }
      if (message === null || typeof message !== "object" || typeof message.type !== "string") return;
      if (message.type === "welcome") clearTimeout(opened);
      this._receive(message);
    };
    ws.onclose = (event) => {
      clearTimeout(opened);
      if (this._ws !== ws) return;
      this._ws = null;
      this.lastError = `closed ${event.code}${event.reason ? `: ${event.reason}` : ""}`;
      if (isPermanentClose(event.code) && !this.refusal) {
        this.refusal = { code: "closed", message: this.lastError, close: event.code };
      }
      this._lost();
    };
    ws.onerror = () => {
      // Always followed by `close`, which handles it.
    };
  }

  _receive(message) {
    switch (message.type) {
      case "unsubscribed":
        if (typeof message.doc === "string" && this._leaving.delete(message.doc)) {
          this.providers.get(message.doc)?._subscribe();
        }
        return;
      case "welcome":
        this._leaving.clear(); // a new connection has no subscriptions
        this.welcome = message;
        this.user = typeof message.user === "string" ? message.user : null;
        this._onlineSince = performance.now();
        this._setState(ConnectionState.ONLINE);
        this._startHeartbeat();
        this.emit("welcome", [message]);
        for (const p of this.providers.values()) p._subscribe();
        return;
      case "pong": {
        const sent = this._pings.get(message.id);
        if (sent !== undefined) {
          this._pings.delete(message.id);
          this.rttMs = Math.round((performance.now() - sent) * 10) / 10;
          this.emit("status", []);
        }
        return;
      }
      case "error":
        if (message.doc === undefined && PERMANENT_ERRORS.has(message.code)) {
          this.refusal = message;
          this.lastError = `${message.code}: ${message.message}`;
          this.emit("refused", [message]);
          return;
        }
        if (message.doc === undefined) {
          console.info(`collab: server error ${message.code}: ${message.message}`);
          return;
        }
        break;
      default:
        break;
    }
    if (typeof message.doc !== "string") return;
    const provider = this.providers.get(message.doc);
    if (provider !== undefined) provider._receive(message);
  }

  _startHeartbeat() {
    clearInterval(this._heartbeat);
    this._pings.clear();
    this._lastHeard = performance.now();
    const ping = () => {
      const now = performance.now();
      // Silent past the timeout (no pong, nothing else either): the connection is dead,
      // whatever TCP says (a sleeping laptop, a cut that sent no reset).
      if (now - this._lastHeard > this.options.heartbeatTimeoutMs) {
        this._drop("no answer to heartbeats");
        return;
      }
      this._pingId = (this._pingId + 1) % 0x7fffffff;
      // At most a few pings in flight: the oldest unanswered ones are forgotten.
      if (this._pings.size >= 8) this._pings.delete(this._pings.keys().next().value);
      this._pings.set(this._pingId, now);
      this.send({ type: "ping", id: this._pingId });
    };
    ping();
    this._heartbeat = setInterval(ping, Math.max(250, this.options.heartbeatMs));
  }

  /** Abandons the current socket at once and treats the connection as lost. */
  _drop(reason) {
    const ws = this._ws;
    if (ws === null) return;
    this._ws = null;
    this.lastError = reason;
    try {
      ws.close(4000, reason.slice(0, 100));
    } catch {
      // already closing
    }
    this._lost();
  }

  _teardown() {
    clearInterval(this._heartbeat);
    this._heartbeat = null;
    clearTimeout(this._timer);
    this._timer = null;
    this._abandon();
  }

  /** Forgets the current socket without treating it as lost. */
  _abandon() {
    const ws = this._ws;
    if (ws === null) return;
    this._ws = null;
    ws.onopen = null;
    ws.onclose = null;
    ws.onmessage = null;
    try {
      ws.close(1000, "closed by the page");
    } catch {
      // already closing
    }
  }

  _lost() {
    // The backoff starts over only after a connection that lasted: a server that
    // accepts and drops at once is not hammered.
    if (this._onlineSince !== null && performance.now() - this._onlineSince > STABLE_MS) this._attempt = 0;
    this._onlineSince = null;
    clearInterval(this._heartbeat);
    this._heartbeat = null;
    this._pings.clear();
    if (this.state === ConnectionState.CLOSED) return;
    if (this.refusal) {
      this._setState(ConnectionState.CLOSED);
      return;
    }
    const offline = globalThis.navigator?.onLine === false;
    this._setState(offline ? ConnectionState.OFFLINE : ConnectionState.RECONNECTING);
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    // While the browser says it has no network, wait for its `online` event instead
    // of trying in vain (and instead of reaching a server on this machine, which an
    // offline browser could: it is offline for the page).
    if (globalThis.navigator?.onLine === false) {
      clearTimeout(this._timer);
      this._timer = null;
      return;
    }
    // Full jitter: a random delay up to the exponential bound, so clients cut off
    // together do not all come back at the same moment.
    const { backoffMinMs, backoffMaxMs } = this.options;
    const bound = Math.min(backoffMaxMs, backoffMinMs * 2 ** Math.min(this._attempt, 20));
    this._attempt += 1;
    this._connectSoon(Math.random() * bound);
  }

  _connectSoon(delayMs) {
    if (this._destroyed) return;
    if (this._ws !== null) return; // connected or connecting
    if (this.state === ConnectionState.CLOSED) this._setState(ConnectionState.RECONNECTING);
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), delayMs);
  }
}
