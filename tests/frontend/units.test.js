// Unit tests of the page's pure functions, under Node's test runner:
//   tests/test_frontend_units.py bundles this file with esbuild (the sources import
//   npm packages by name, found in scripts/frontend/node_modules) and runs it.
import assert from "node:assert/strict";
import { test } from "node:test";
import { diffText } from "../../static/src/app/diffmarks.js";
import { roleFor, subjectOf } from "../../static/src/app/session.js";

function apply(runs) {
  const before = runs.filter(([k]) => k !== "+").map(([, t]) => t).join("");
  const after = runs.filter(([k]) => k !== "-").map(([, t]) => t).join("");
  return { before, after };
}

test("a diff turns the older text into the newer one", () => {
  assert.deepEqual(diffText("The first draft.", "The first draft. A second thought."), [
    ["=", "The first draft."],
    ["+", " A second thought."],
  ]);
  assert.deepEqual(diffText("abc", ""), [["-", "abc"]]);
  assert.deepEqual(diffText("", ""), []);
  assert.deepEqual(diffText("kitten", "sitting"), [
    ["-", "k"],
    ["+", "s"],
    ["=", "itt"],
    ["-", "e"],
    ["+", "i"],
    ["=", "n"],
    ["+", "g"],
  ]);
});

test("random texts: the runs rebuild both versions and keep a longest common part", () => {
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const word = (n) => Array.from({ length: n }, () => "ab\ncd"[Math.floor(random() * 5)]).join("");
  for (let i = 0; i < 200; i++) {
    const a = word(Math.floor(random() * 40));
    const b = word(Math.floor(random() * 40));
    const runs = diffText(a, b);
    assert.deepEqual(apply(runs), { before: a, after: b });
    for (let j = 1; j < runs.length; j++) assert.notEqual(runs[j][0], runs[j - 1][0]);
  }
});

test("texts too long for the table are one replacement between common ends", () => {
  const a = "start " + "x".repeat(3000) + " end";
  const b = "start " + "y".repeat(3000) + " end";
  const runs = diffText(a, b);
  assert.deepEqual(runs, [
    ["=", "start "],
    ["-", "x".repeat(3000)],
    ["+", "y".repeat(3000)],
    ["=", " end"],
  ]);
});

function token(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.signature`;
}

test("the role a token grants follows the server's shell-style patterns", () => {
  const t = token({ sub: "ann", docs: { "notes/*": "write", handbook: "read", "team/[!x]?": "read", "a.b": "write" } });
  assert.equal(subjectOf(t), "ann");
  assert.equal(roleFor(t, "notes/today"), "write");
  assert.equal(roleFor(t, "notes/a/b"), "write"); // * matches /
  assert.equal(roleFor(t, "handbook"), "read");
  assert.equal(roleFor(t, "handbook2"), null);
  assert.equal(roleFor(t, "team/ab"), "read");
  assert.equal(roleFor(t, "team/xb"), null);
  assert.equal(roleFor(t, "aXb"), null); // a dot is a dot
  const both = token({ sub: "bob", docs: { "*": "read", "own/*": "write" } });
  assert.equal(roleFor(both, "own/x"), "write"); // the strongest role wins
  assert.equal(roleFor(both, "other"), "read");
});

test("a damaged token grants nothing and names nobody", () => {
  for (const bad of ["", "x", "a.b.c", token({ docs: "all" }), token(null)]) {
    assert.equal(roleFor(bad, "notes"), null);
    assert.equal(subjectOf(bad), null);
  }
});
