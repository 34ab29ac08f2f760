#!/usr/bin/env node
// The reference y-websocket server (@y/websocket-server's src/server.js, the same
// lines) with permessage-deflate accepted when a client offers it: ws leaves it off
// on the server by default. Options are ws's defaults for `perMessageDeflate: true`
// (zlib level 6 (Z_DEFAULT_COMPRESSION), context takeover, and messages under
// 1024 bytes sent uncompressed: ws's `threshold`).
// scripts/benchkit copies this file into .bench/node, where its imports resolve.

import WebSocket from 'ws'
import http from 'http'
import * as number from 'lib0/number'
import { setupWSConnection } from '@y/websocket-server/utils'

const wss = new WebSocket.Server({ noServer: true, perMessageDeflate: true })
const host = process.env.HOST || 'localhost'
const port = number.parseInt(process.env.PORT || '1234')

const server = http.createServer((_request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/plain' })
  response.end('okay')
})

wss.on('connection', setupWSConnection)

server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, /** @param {any} ws */ ws => {
    wss.emit('connection', ws, request)
  })
})

server.listen(port, host, () => {
  console.log(`running at '${host}' on port ${port} (permessage-deflate on)`)
})
