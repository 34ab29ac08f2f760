// A Yjs peer driven over stdin/stdout, for the interop tests.
//
// One process hosts any number of named providers: each is a Y.Doc with a
// WebsocketProvider from y-websocket (Node's `ws` as the WebSocket, no
// BroadcastChannel), exactly as an editor would use it.
//
// Protocol, one JSON value per line:
//   stdin   {"id": 1, "cmd": "open", "name": "a", "url": "ws://...", "room": "doc"}
//   stdout  {"id": 1, "ok": true, "result": ...}   or   {"id": 1, "ok": false, "error": "..."}
//   stdout  {"event": "state", "name": "a", "state": {...}}   whenever a provider changes
//   stdout  {"event": "ready"}                                 once, at start
//
// The state event is what tests wait on: it is sent after every change of a
// provider's document, awareness, connection status or sync flag (coalesced to
// one per turn of the event loop), and before the reply to any command, so a
// reply is never ahead of the state it caused. Diagnostics go to stderr.

import { readFileSync } from 'node:fs'
import * as readline from 'node:readline'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

// y-websocket registers a process 'exit' listener per provider.
process.setMaxListeners(0)

/** @type {Map<string, {doc: Y.Doc, provider: WebsocketProvider, closes: Array<object>, destroyed: boolean}>} */
const peers = new Map()
const dirty = new Set()
let flushScheduled = false

// A BigInt in a document (Yjs' 64-bit integer) would make JSON.stringify throw.
const jsonValue = (_key, value) => typeof value === 'bigint' ? { bigint: value.toString() } : value

const write = (message) => {
  process.stdout.write(JSON.stringify(message, jsonValue) + '\n')
}

const versionOf = (pkg) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url))).version

const snapshot = (peer) => {
  const { doc, provider } = peer
  const awareness = {}
  for (const [clientID, state] of provider.awareness.getStates()) {
    awareness[clientID] = state
  }
  const sv = {}
  for (const [clientID, clock] of Y.decodeStateVector(Y.encodeStateVector(doc))) {
    sv[clientID] = clock
  }
  return {
    clientID: doc.clientID,
    status: provider.wsconnected ? 'connected' : provider.wsconnecting ? 'connecting' : 'disconnected',
    synced: provider.synced,
    destroyed: peer.destroyed,
    text: doc.getText('text').toString(),
    map: doc.getMap('map').toJSON(),
    array: doc.getArray('array').toJSON(),
    awareness,
    sv,
    closes: peer.closes
  }
}

const flush = () => {
  flushScheduled = false
  for (const name of dirty) {
    const peer = peers.get(name)
    if (peer !== undefined) write({ event: 'state', name, state: snapshot(peer) })
  }
  dirty.clear()
}

const changed = (name) => {
  dirty.add(name)
  if (!flushScheduled) {
    flushScheduled = true
    setImmediate(flush)
  }
}

const get = (name) => {
  const peer = peers.get(name)
  if (peer === undefined) throw new Error(`no provider named ${JSON.stringify(name)}`)
  return peer
}

const applyOp = (doc, op) => {
  const [kind, ...args] = op
  switch (kind) {
    case 'text_insert': return doc.getText('text').insert(args[0], args[1])
    case 'text_delete': return doc.getText('text').delete(args[0], args[1])
    case 'map_set': return doc.getMap('map').set(args[0], args[1])
    case 'map_delete': return doc.getMap('map').delete(args[0])
    case 'array_insert': return doc.getArray('array').insert(args[0], args[1])
    case 'array_push': return doc.getArray('array').push(args[0])
    case 'array_delete': return doc.getArray('array').delete(args[0], args[1])
    default: throw new Error(`unknown edit ${JSON.stringify(kind)}`)
  }
}

const commands = {
  open ({ name, url, room, params = {}, awareness = null }) {
    if (peers.has(name)) throw new Error(`provider ${name} exists`)
    const doc = new Y.Doc()
    // Root types are declared up front so that content from others is typed.
    doc.getText('text')
    doc.getMap('map')
    doc.getArray('array')
    const provider = new WebsocketProvider(url, room, doc, {
      WebSocketPolyfill: WebSocket,
      disableBc: true,
      params,
      connect: false
    })
    const peer = { doc, provider, closes: [], destroyed: false }
    peers.set(name, peer)
    if (awareness !== null) provider.awareness.setLocalState(awareness)
    doc.on('update', () => changed(name))
    provider.awareness.on('change', () => changed(name))
    provider.on('status', () => changed(name))
    provider.on('sync', () => changed(name))
    provider.on('connection-close', (event) => {
      // event is null when the provider closed the socket itself.
      if (event != null) peer.closes.push({ code: event.code, reason: String(event.reason) })
      changed(name)
    })
    provider.connect()
    changed(name)
    return { clientID: doc.clientID }
  },
  edit ({ name, ops }) {
    const { doc } = get(name)
    doc.transact(() => {
      for (const op of ops) applyOp(doc, op)
    })
  },
  // Edits to several providers in one turn of the event loop: none of them can
  // have received another's edit, so they are truly concurrent.
  edit_together ({ edits }) {
    for (const { name, ops } of edits) commands.edit({ name, ops })
  },
  awareness ({ name, state }) {
    get(name).provider.awareness.setLocalState(state)
  },
  disconnect ({ name }) {
    get(name).provider.disconnect()
    changed(name)
  },
  connect ({ name }) {
    get(name).provider.connect()
    changed(name)
  },
  destroy ({ name }) {
    const peer = get(name)
    peer.provider.destroy()
    peer.destroyed = true
    changed(name)
  },
  state ({ name }) {
    return snapshot(get(name))
  }
}

const shutdown = () => {
  for (const peer of peers.values()) {
    if (!peer.destroyed) peer.provider.destroy()
  }
  process.exit(0)
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
lines.on('line', (line) => {
  if (line.trim() === '') return
  let id = null
  try {
    const message = JSON.parse(line)
    id = message.id
    const command = commands[message.cmd]
    if (command === undefined) throw new Error(`unknown command ${JSON.stringify(message.cmd)}`)
    const result = command(message) ?? null
    flush()
    write({ id, ok: true, result })
  } catch (error) {
    flush()
    write({ id, ok: false, error: String(error?.stack ?? error) })
  }
})
lines.on('close', shutdown)

write({
  event: 'ready',
  versions: { node: process.versions.node, yjs: versionOf('yjs'), 'y-websocket': versionOf('y-websocket') }
})
