// Replays Yjs updates with the real yjs package and prints what the documents hold.
//
// stdin: one JSON object {"docs": {"<label>": ["<base64 update>", ...], ...},
//                         "each": {"<label>": [...]}}
// stdout: one JSON object {"<label>": {"ok": true, "dump": "..."} | {"ok": false,
//         "index": n, "error": "..."}, ...}
//
// Under "docs", each label's updates are applied in order to one fresh Y.Doc;
// under "each", every update to a fresh Y.Doc of its own (the dump is the last's). The dump is
// canonical: the integrated content of every root (list items and map entries,
// deleted ones left out, nested types recursively) and the state vector, so two
// documents with the same content dump alike whatever the order of their history.

import * as Y from 'yjs'

const MAX_DEPTH = 1000

const dumpContent = (content, depth) => {
  if (content instanceof Y.ContentType) {
    return { type: content.type.constructor.name, name: content.type.nodeName ?? null, value: dumpType(content.type, depth + 1) }
  }
  if (content instanceof Y.ContentFormat) return { format: [content.key, content.value] }
  if (content instanceof Y.ContentEmbed) return { embed: content.embed }
  if (content instanceof Y.ContentDoc) return { subdoc: content.doc.guid }
  if (content instanceof Y.ContentBinary) return { binary: Array.from(content.content) }
  return content.getContent().map((value) => value instanceof Uint8Array ? { binary: Array.from(value) } : value)
}

const dumpType = (type, depth) => {
  if (depth > MAX_DEPTH) throw new Error('types nest deeper than ' + MAX_DEPTH)
  const items = []
  for (let item = type._start; item !== null; item = item.right) {
    if (!item.deleted) items.push(dumpContent(item.content, depth))
  }
  const entries = {}
  for (const key of [...type._map.keys()].sort()) {
    const item = type._map.get(key)
    if (!item.deleted) entries[key] = dumpContent(item.content, depth)
  }
  return { items, entries }
}

const dump = (doc) => {
  const roots = {}
  for (const name of [...doc.share.keys()].sort()) {
    const value = dumpType(doc.share.get(name), 0)
    if (value.items.length > 0 || Object.keys(value.entries).length > 0) roots[name] = value
  }
  const sv = [...Y.decodeStateVector(Y.encodeStateVector(doc))].sort((a, b) => a[0] - b[0])
  return JSON.stringify({ sv, roots }, (_key, value) => {
    if (typeof value === 'bigint') return { bigint: value.toString() }
    return value === undefined ? { undefined: true } : value
  })
}

let input = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => { input += chunk })
process.stdin.on('end', () => {
  const { docs = {}, each = {} } = JSON.parse(input)
  const result = {}
  for (const [mode, labels] of [['docs', docs], ['each', each]]) {
    for (const [label, updates] of Object.entries(labels)) {
      let doc = new Y.Doc()
      let index = 0
      try {
        for (; index < updates.length; index++) {
          if (mode === 'each') doc = new Y.Doc()
          Y.applyUpdate(doc, Buffer.from(updates[index], 'base64'))
        }
        result[label] = { ok: true, dump: dump(doc) }
      } catch (error) {
        result[label] = { ok: false, index, error: String(error?.message ?? error) }
      }
    }
  }
  process.stdout.write(JSON.stringify(result) + '\n')
})
