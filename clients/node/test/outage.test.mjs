// The Node client rides out a database outage as long as a primary failover. Driven by
// tests/e2e/test_node_client.py, which also sets:
//   CREDITSTREAM_OUTAGE_URL      a server whose PostgreSQL sits behind a proxy that can cut it
//   CREDITSTREAM_OUTAGE_CONTROL  POST {it}/cut?seconds=8: the database is gone for 8 s (every
//                                connection dropped, new ones refused: the server answers 503)
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { CreditstreamClient, Unavailable } from "../index.js";

const URL_ = process.env.CREDITSTREAM_OUTAGE_URL;
const CONTROL = process.env.CREDITSTREAM_OUTAGE_CONTROL;
const KEY = process.env.CREDITSTREAM_KEY;
const skip = !URL_ || !CONTROL || !KEY ? "set CREDITSTREAM_OUTAGE_URL and _CONTROL" : false;
const OUTAGE_S = 8;

const newAccount = () => `node-cut-${randomUUID().slice(0, 8)}`;
const cut = async (seconds) => {
  const answer = await fetch(`${CONTROL}/cut?seconds=${seconds}`, { method: "POST" });
  assert.equal(answer.status, 204);
};
function recordingFetch() {
  const sent = [];
  return { sent, fetch: (url, init) => { sent.push({ url, ...init }); return fetch(url, init); } };
}

test("a write during the outage answers once the database is back, applied once", { skip },
  async () => {
    const recorder = recordingFetch();
    const client = new CreditstreamClient({ baseUrl: URL_, key: KEY, fetch: recorder.fetch });
    const ann = newAccount();
    await client.ensureAccount(ann);
    await cut(OUTAGE_S);
    const started = Date.now();
    const { charge } = await client.createCharge(ann, { amount: 2, ref: "during-the-outage" });
    const took = (Date.now() - started) / 1000;
    assert.ok(took > OUTAGE_S - 1 && took < OUTAGE_S + 10, `took ${took} s`);
    const posts = recorder.sent.filter((r) => r.method === "POST");
    assert.ok(posts.length > 2, `${posts.length} attempts`);  // 503s first, then the answer
    assert.equal(new Set(posts.map((r) => r.headers["Idempotency-Key"])).size, 1);
    const charges = (await client.listEntries(ann)).entries.filter((e) => e.type === "charge");
    assert.deepEqual(charges.map((e) => e.op_id), [charge.charge_id]);  // exactly one effect
    assert.equal((await client.getAccount(ann)).balance, 26);
  });

test("a budget shorter than the outage fails naming the last answer", { skip }, async () => {
  const client = new CreditstreamClient({ baseUrl: URL_, key: KEY, retryBudgetMs: 2_000 });
  const bo = newAccount();
  await client.ensureAccount(bo);
  await cut(OUTAGE_S);
  const started = Date.now();
  await assert.rejects(client.createCharge(bo, { amount: 1 }, { idempotencyKey: `k-${bo}` }),
    (error) => {
      assert.ok(error instanceof Unavailable, String(error));
      assert.equal(error.status, 503);
      assert.equal(error.code, "service_unavailable");
      assert.ok(error.attempts > 1);
      assert.match(error.message, /retry budget 2 s\); last answer 503/);
      return true;
    });
  assert.ok(Date.now() - started < 5_000);
  // once the database is back, the same key applies the charge (the 503s changed nothing)
  const patient = new CreditstreamClient({ baseUrl: URL_, key: KEY });
  await patient.createCharge(bo, { amount: 1 }, { idempotencyKey: `k-${bo}` });
  assert.deepEqual((await patient.listEntries(bo)).entries.map((e) => e.type),
    ["grant", "charge"]);
});
