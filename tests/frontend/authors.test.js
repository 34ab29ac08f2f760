// Unit tests of who wrote what on the page (static/src/app/authors.js), under Node's
// test runner (tests/test_frontend_units.py bundles and runs every *.test.js here).
import assert from "node:assert/strict";
import { test } from "node:test";
import { getSchema } from "@tiptap/core";
import StarterKit from "@tiptap/starter-kit";
import { authorOfEachChar, colourOf, nameOf } from "../../static/src/app/authors.js";
import { textOf } from "../../static/src/app/diffmarks.js";

test("each UTF-16 unit of the text has its run's author, emoji included", () => {
  const runs = [
    { text: "ab😀", author: 0 },
    { text: "\n", author: null },
    { text: "c", author: 1 },
  ];
  assert.deepEqual(authorOfEachChar(runs), [0, 0, 0, 0, null, 1]);
});

test("the runs of a rich text line up with the editor's text of it", () => {
  const schema = getSchema([StarterKit]);
  const doc = schema.nodeFromJSON({
    type: "doc",
    content: [
      { type: "paragraph", content: [{ type: "text", text: "Ann 😀" }] },
      { type: "paragraph" },
      { type: "paragraph", content: [{ type: "text", text: "Bob" }] },
    ],
  });
  // What the server answers for it: blocks separated by one newline.
  const runs = [
    { text: "Ann 😀", author: 0 },
    { text: "\n\n", author: null },
    { text: "Bob", author: 1 },
  ];
  const { text, positions } = textOf(doc);
  assert.equal(runs.map((r) => r.text).join(""), text);
  assert.equal(authorOfEachChar(runs).length, positions.length);
});

test("authors get different colours", () => {
  const colours = new Set([0, 1, 2, 3, 4, 5, 6, 7].map(colourOf));
  assert.equal(colours.size, 8);
});

test("a guest is named without the page's client label prefix", () => {
  assert.equal(nameOf({ user: null, client: "web:Ann" }), "Ann");
  assert.equal(nameOf({ user: "bob", client: "web:Bob" }), "bob");
  assert.equal(nameOf({ user: null, client: "api:restore:127.0.0.1" }), "api:restore:127.0.0.1");
});
