// Run by tests/test_client_package.py inside an application that installed the packed
// @collab/client: imports it as Node resolves it (its `exports`), and checks that the
// declarations (index.d.ts, read with TypeScript's compiler API) and the code agree:
// every value declared is exported, every export is declared, every member declared on
// a class exists on an instance, and the constants hold the values declared.
// TYPESCRIPT: the path of the typescript package to use.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import * as collab from "@collab/client";

const require = createRequire(import.meta.url);
const ts = createRequire(process.env.TYPESCRIPT)("typescript");
const manifest = require("@collab/client/package.json");
const declarations = require.resolve("@collab/client/package.json").replace(/package\.json$/, manifest.types.replace(/^\.\//, ""));

class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
  }
  send() {}
  close() {}
}

const client = new collab.CollabClient("ws://127.0.0.1:1/ws", { WebSocket: FakeSocket, connectTimeoutMs: 50 });
const provider = new collab.DocumentProvider(client, "notes", { persist: false });
await provider.whenLoaded;
const instances = { CollabClient: client, DocumentProvider: provider };

const program = ts.createProgram([declarations], { strict: true, types: [], module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext });
const checker = program.getTypeChecker();
const module = checker.getSymbolAtLocation(program.getSourceFile(declarations));
const declared = new Set();
let members = 0;
for (const symbol of checker.getExportsOfModule(module)) {
  if (!(symbol.flags & ts.SymbolFlags.Value)) continue; // a type: nothing at run time
  const name = symbol.getName();
  declared.add(name);
  assert.ok(name in collab, `${name} is declared but not exported`);
  if (symbol.flags & ts.SymbolFlags.Class) {
    for (const member of checker.getPropertiesOfType(checker.getDeclaredTypeOfSymbol(symbol))) {
      assert.ok(member.getName() in instances[name], `${name}.${member.getName()} is declared but missing`);
      members += 1;
    }
  } else {
    const type = checker.getTypeOfSymbolAtLocation(symbol, symbol.valueDeclaration);
    if (type.isLiteral()) assert.equal(collab[name], type.value, name);
    for (const field of checker.getPropertiesOfType(type)) {
      const value = checker.getTypeOfSymbolAtLocation(field, symbol.valueDeclaration);
      if (value.isStringLiteral()) assert.equal(collab[name][field.getName()], value.value, `${name}.${field.getName()}`);
    }
  }
}
assert.deepEqual(Object.keys(collab).sort(), [...declared].sort(), "exports and declarations differ");
assert.equal(typeof collab.TAB_ID, "string");
client.destroy();
console.log(JSON.stringify({ name: manifest.name, version: manifest.version, exports: Object.keys(collab).sort(), members }));
