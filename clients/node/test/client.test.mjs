// The Node client against a live creditstream server. Driven by tests/e2e/test_node_client.py,
// which starts the server and two proxies in front of it and sets:
//   CREDITSTREAM_URL, CREDITSTREAM_KEY   the server and a server key
//   CREDITSTREAM_DROP_URL                a proxy that loses the first answer it relays
//   CREDITSTREAM_503_URL                 a proxy that answers its first two requests 503
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";

import {
  CreditstreamClient, CreditstreamError, FeatureLimitExceeded, IdempotencyKeyReused,
  InsufficientCredits, InvalidState, NotFound, PermissionDenied, RefundExceedsSpend,
  AuthenticationError, ValidationError, RateLimited, verifyWebhook,
} from "../index.js";

const URL_ = process.env.CREDITSTREAM_URL;
const KEY = process.env.CREDITSTREAM_KEY;
if (!URL_ || !KEY) throw new Error("set CREDITSTREAM_URL and CREDITSTREAM_KEY");

const client = new CreditstreamClient({ baseUrl: URL_, key: KEY });
const newAccount = () => `node-${randomUUID().slice(0, 10)}`;
const kinds = (page) => page.entries.map((entry) => entry.type);

/** A fetch that records what it sends, to count attempts and see their keys. */
function recordingFetch() {
  const sent = [];
  const wrapped = (url, init) => { sent.push({ url, ...init }); return fetch(url, init); };
  return { sent, fetch: wrapped };
}

test("every operation", async () => {
  const alice = newAccount();
  assert.equal((await client.ensureAccount(alice)).balance, 28);
  assert.equal((await client.getAccount(alice)).available, 28);
  const granted = await client.createGrant(alice, { amount: 100, reason: "purchase", ref: "o-1" });
  assert.equal(granted.account.balance, 128);
  assert.equal((await client.createGrant(alice, { plan: "starter" })).account.plan, "starter");

  const { charge } = await client.createCharge(alice, {
    price: { operation: "script_generation" }, metadata: { tokensUsed: 12 } });
  assert.equal(charge.amount, 1);
  assert.deepEqual(charge.metadata, { tokensUsed: 12 });

  const { hold } = await client.createHold({ account_id: alice, amount: 10, ref: "render-1" });
  assert.equal((await client.getHold(hold.hold_id)).status, "open");
  const captured = await client.captureHold(hold.hold_id, { amount: 6 });
  assert.equal(captured.hold.captured_amount, 6);
  const other = (await client.createHold({ account_id: alice, amount: 5 })).hold;
  assert.equal((await client.releaseHold(other.hold_id, { reason: "cancelled" })).hold.status,
    "released");
  assert.equal((await client.createRefund({ charge_id: charge.charge_id })).refund.amount, 1);
  assert.equal((await client.createRefund({ hold_id: hold.hold_id, amount: 2 })).refund.amount, 2);

  const quote = await client.quote({ account_id: alice, operation: "image",
    model: "FLUX.1 [dev]" });
  assert.equal(quote.cost, 90);
  assert.equal(quote.affordable, true);
  assert.ok((await client.getPricing()).operations.some((o) => o.operation === "video"));
  assert.ok(await client.getPlans());

  const { job } = await client.createJob({ account_id: alice, operation: "audio",
    provider: "simulated", input: { simulate: "hang" } });
  assert.equal((await client.getJob(job.job_id)).status, "processing");
  const outcome = await client.reportJobResult(job.job_id, { status: "failed", error: "gave up" });
  assert.equal(outcome.job.status, "failed");
  assert.deepEqual((await client.listJobs(alice, { status: "failed" })).jobs.map((j) => j.job_id),
    [job.job_id]);

  const { results } = await client.batch([
    { op: "grant", account_id: alice, amount: 3, reason: "bonus" },
    { op: "charge", account_id: alice, amount: 10 ** 9 }]);
  assert.deepEqual(results.map((r) => r.status), [201, 402]);

  const { token } = await client.createToken(alice, { ttlSeconds: 60 });
  const user = new CreditstreamClient({ baseUrl: URL_, key: token });
  assert.equal((await user.getAccount(alice)).account_id, alice);

  const entries = await client.listEntries(alice, { limit: 500 });
  assert.deepEqual(kinds(entries).slice(0, 3), ["grant", "grant", "grant"]);
  const events = await client.listEvents(alice, { afterSeq: 0, limit: 500 });
  assert.equal(events.events[0].seq, 1);
  const waited = await client.listEvents(alice, { afterSeq: events.seq, wait: 0.2 });
  assert.deepEqual(waited.events, []);
  assert.equal((await client.getUsage(alice, "day")).jobs.failed, 1);

  const endpoint = await client.createWebhookEndpoint({ url: "http://127.0.0.1:9/hook",
    events: ["credits.low"] });
  assert.match(endpoint.secret, /^whsec_/);
  assert.ok((await client.listWebhookEndpoints()).endpoints.some((e) => e.id === endpoint.id));
  assert.equal((await client.listWebhookDeliveries(endpoint.id, { limit: 5 })).endpoint.id,
    endpoint.id);
  assert.equal((await client.enableWebhookEndpoint(endpoint.id)).status, "enabled");
  const tested = await client.testWebhookEndpoint(endpoint.id);  // port 9: refused
  assert.equal(tested.ok, false);
  assert.equal(tested.event.type, "webhook.test");
  const resent = await client.resendWebhookEvents(endpoint.id, { account_id: alice, from_seq: 1 });
  assert.deepEqual([resent.account_id, resent.from_seq], [alice, 1]);
  await assert.rejects(client.resendWebhookEvents(endpoint.id, { account_id: alice, from_seq: 0 }),
    (error) => error instanceof ValidationError && error.code === "invalid_from_seq");
  assert.equal((await client.deleteWebhookEndpoint(endpoint.id)).deleted, true);
});

test("typed errors: 402 with the shortfall, and the others by code and status", async () => {
  const bob = newAccount();
  await client.ensureAccount(bob);
  await assert.rejects(client.createHold({ account_id: bob, amount: 100 }), (error) => {
    assert.ok(error instanceof InsufficientCredits && error instanceof CreditstreamError);
    assert.equal(error.status, 402);
    assert.equal(error.code, "insufficient_credits");
    assert.deepEqual([error.required, error.available, error.shortfall], [100, 28, 72]);
    assert.match(error.message, /72 more credits/);
    return true;
  });
  await assert.rejects(client.getHold("hold_unknown"), NotFound);
  await assert.rejects(client.createGrant(bob, { amount: 0 }), ValidationError);
  await client.createCharge(bob, { amount: 1 }, { idempotencyKey: "node-k1" });
  await assert.rejects(client.createCharge(bob, { amount: 2 }, { idempotencyKey: "node-k1" }),
    IdempotencyKeyReused);
  const { charge } = await client.createCharge(bob, { amount: 1 });
  await assert.rejects(client.createRefund({ charge_id: charge.charge_id, amount: 5 }),
    (error) => error instanceof RefundExceedsSpend && error.refundable === 1);
  const { hold } = await client.createHold({ account_id: bob, amount: 1 });
  await client.releaseHold(hold.hold_id);
  await assert.rejects(client.captureHold(hold.hold_id), InvalidState);

  const carol = newAccount();
  await client.createGrant(carol, { amount: 50, reason: "purchase" });
  for (let i = 0; i < 3; i++) {
    await client.createCharge(carol, { price: { operation: "script_generation" } });
  }
  await assert.rejects(client.createCharge(carol, { price: { operation: "script_generation" } }),
    (error) => error instanceof FeatureLimitExceeded && error instanceof RateLimited
      && error.retryAfter > 0);

  const { token } = await client.createToken(bob);
  const user = new CreditstreamClient({ baseUrl: URL_, key: token });
  await assert.rejects(user.createCharge(bob, { amount: 1 }), PermissionDenied);
  const stranger = new CreditstreamClient({ baseUrl: URL_, key: "sk_not_a_key" });
  await assert.rejects(stranger.getAccount(bob), AuthenticationError);
});

test("a 4xx is not retried", async () => {
  const recorder = recordingFetch();
  const counted = new CreditstreamClient({ baseUrl: URL_, key: KEY, fetch: recorder.fetch,
    maxAttempts: 5 });
  await assert.rejects(counted.createHold({ account_id: newAccount(), amount: 1000 }),
    InsufficientCredits);
  assert.equal(recorder.sent.length, 1);
});

test("an answer lost on the way is retried with the same key and applied once", async () => {
  const dave = newAccount();
  await client.ensureAccount(dave);
  const recorder = recordingFetch();
  const throughProxy = new CreditstreamClient({ baseUrl: process.env.CREDITSTREAM_DROP_URL,
    key: KEY, fetch: recorder.fetch, baseDelayMs: 50 });
  const { hold } = await throughProxy.createHold({ account_id: dave, amount: 2, ref: "lost" });
  assert.equal(recorder.sent.length, 2);  // the first answer was dropped by the proxy
  const keys = recorder.sent.map((r) => r.headers["Idempotency-Key"]);
  assert.equal(keys[0], keys[1]);
  const entries = (await client.listEntries(dave)).entries;
  assert.deepEqual(entries.map((e) => e.type), ["grant", "hold"]);  // one hold, not two
  assert.equal(entries[1].op_id, hold.hold_id);
  assert.equal(entries[1].idempotency_key, keys[0]);
});

test("a 503 is retried", async () => {
  const erin = newAccount();
  await client.ensureAccount(erin);
  const recorder = recordingFetch();
  const throughProxy = new CreditstreamClient({ baseUrl: process.env.CREDITSTREAM_503_URL,
    key: KEY, fetch: recorder.fetch, baseDelayMs: 50 });
  const { charge } = await throughProxy.createCharge(erin, { amount: 1 });
  assert.equal(recorder.sent.length, 3);
  assert.equal(new Set(recorder.sent.map((r) => r.headers["Idempotency-Key"])).size, 1);
  assert.deepEqual(kinds(await client.listEntries(erin)), ["grant", "charge"]);
  assert.equal(charge.amount, 1);
});

test("verifyWebhook accepts a real delivery and rejects a tampered or stale one", async () => {
  const deliveries = [];
  const receiver = createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      deliveries.push({ headers: request.headers, body: Buffer.concat(chunks) });
      response.writeHead(200).end("ok");
    });
  });
  await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${receiver.address().port}/hook`;
  const endpoint = await client.createWebhookEndpoint({ url, events: ["balance.updated"] });
  try {
    await client.ensureAccount(newAccount());
    const deadline = Date.now() + 60_000;
    while (deliveries.length === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(deliveries.length > 0, "no delivery within 60 s");
    const { headers, body } = deliveries[0];
    const header = headers["x-signature"];
    const secret = endpoint.secret;
    assert.equal(verifyWebhook(secret, body, header), true);
    assert.equal(verifyWebhook(secret, body.toString("utf8"), header), true);
    assert.equal(verifyWebhook(secret, Buffer.concat([body, Buffer.from(" ")]), header), false);
    assert.equal(verifyWebhook("whsec_other", body, header), false);
    const signedAt = Number(/t=(\d+)/.exec(header)[1]);
    assert.equal(verifyWebhook(secret, body, header, { now: signedAt + 299 }), true);
    assert.equal(verifyWebhook(secret, body, header, { now: signedAt + 301 }), false);
    assert.equal(verifyWebhook(secret, body, header, { toleranceS: 5, now: signedAt + 6 }), false);
    assert.equal(verifyWebhook(secret, body, undefined), false);
    assert.equal(verifyWebhook(secret, body, header.replace(/t=\d+/, `t=${signedAt + 1}`)), false);
  } finally {
    receiver.closeAllConnections();
    await new Promise((resolve) => receiver.close(resolve));
    await client.deleteWebhookEndpoint(endpoint.id);
  }
});
