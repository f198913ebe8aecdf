/**
 * The operator console's page (api/console/). Signed in by the session cookie (HttpOnly: this
 * script never sees it); every change sends the session's CSRF token in X-CSRF-Token. The
 * account on screen is followed live through the browser SDK, with stream tickets the
 * console issues. Text from the server goes into the page as text only, never as HTML.
 */
import { CreditStream } from "/static/creditstream.js";

const $ = (id) => document.getElementById(id);
const state = {
  csrf: null, accountId: null, stream: null, newest: 0, oldest: null, refreshing: null,
};
window.console_ = state; // for tests and curious operators

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = state.csrf;
  }
  const response = await fetch(path, {
    method, headers, cache: "no-store", credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = payload.error?.message ?? `HTTP ${response.status}`;
    throw Object.assign(new Error(message), { status: response.status });
  }
  return payload;
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

function cell(row, value) {
  const td = row.insertCell();
  td.textContent = value === null || value === undefined ? "" : String(value);
  return td;
}

function fill(tableId, items, columns) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  for (const item of items) {
    const row = body.insertRow();
    for (const column of columns) cell(row, column(item));
  }
  return body;
}

const operatorOf = (entry) => entry.metadata?.operator ?? entry.metadata?.metadata?.operator ?? "";

function showFigures(account) {
  for (const name of ["balance", "held", "available", "seq"]) {
    if (account[name] !== undefined) $(name).textContent = String(account[name]);
  }
  if (account.plan !== undefined) $("plan").textContent = account.plan ?? "—";
  if (account.trial) {
    const trial = account.trial;
    $("trial").textContent = trial.active
      ? `active until ${trial.expires_at} (${trial.spent_today}/${trial.daily_limit} today)`
      : "ended";
  }
}

function showOverview(view) {
  showFigures(view.account);
  fill("grants", view.grants, [
    (g) => g.grant_id, (g) => g.reason, (g) => g.amount, (g) => g.remaining,
    (g) => g.expires_at ?? "never",
  ]);
  const holds = fill("holds", view.holds, [
    (h) => h.hold_id, (h) => h.amount, (h) => h.ref, (h) => h.expires_at, () => "",
  ]);
  view.holds.forEach((hold, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Release";
    button.dataset.holdId = hold.hold_id;
    button.addEventListener("click", () => release(hold.hold_id));
    holds.rows[index].cells[4].append(button);
  });
  fill("jobs", view.jobs, [
    (j) => j.job_id, (j) => j.operation, (j) => j.model, (j) => j.cost, (j) => j.status,
    (j) => j.result_url ?? j.error,
  ]);
  fill("refunds", view.refunds, [
    (e) => e.seq, (e) => e.amount, (e) => e.reason,
    (e) => e.metadata?.charge_id ?? e.metadata?.hold_id ?? e.op_id, operatorOf,
    (e) => e.created_at,
  ]);
}

function entryRow(e) {
  const row = document.createElement("tr");
  row.dataset.entryId = String(e.entry_id);
  for (const value of [e.seq, e.type, e.delta, e.held_delta, e.reason, e.ref, operatorOf(e),
    e.created_at]) cell(row, value);
  return row;
}

/** The journal, newest line on top: the latest page first, older pages on demand, and what is
 * new since the newest line on every refresh. */
async function loadEntries(reset) {
  const body = $("entries").tBodies[0];
  const path = `/console/api/accounts/${encodeURIComponent(state.accountId)}/entries`;
  if (reset) {
    body.replaceChildren();
    state.newest = 0;
    state.oldest = null;
    await loadOlder();
    return;
  }
  for (;;) {
    const page = await api(`${path}?after=${state.newest}&limit=200`);
    for (const e of page.entries) body.prepend(entryRow(e));
    if (page.entries.length) state.newest = page.entries.at(-1).entry_id;
    if (!page.has_more) break;
  }
}

async function loadOlder() {
  const body = $("entries").tBodies[0];
  const before = state.oldest === null ? "" : `&before=${state.oldest}`;
  const id = encodeURIComponent(state.accountId);
  const page = await api(`/console/api/accounts/${id}/entries?limit=50${before}`);
  for (const e of page.entries) body.append(entryRow(e));
  if (page.entries.length) {
    state.oldest = page.entries.at(-1).entry_id;
    state.newest = Math.max(state.newest, page.entries[0].entry_id);
  }
  $("more-entries").hidden = !page.has_more;
}

async function refresh() {
  // coalesce: events arriving together refresh once, and never two refreshes at a time
  if (state.refreshing) return state.refreshing;
  state.refreshing = (async () => {
    try {
      const id = encodeURIComponent(state.accountId);
      showOverview(await api(`/console/api/accounts/${id}`));
      await loadEntries(false);
    } finally {
      state.refreshing = null;
    }
  })();
  return state.refreshing;
}

function follow(accountId) {
  state.stream?.close();
  const id = encodeURIComponent(accountId);
  const stream = new CreditStream({
    accountId,
    ticket: async () => (await api(`/console/api/accounts/${id}/stream-ticket`, { method: "POST", body: {} })).ticket,
  });
  stream.onState((s) => { $("live").textContent = s; });
  stream.onBalance((account) => {
    if (accountId !== state.accountId) return;
    showFigures(account);
    refresh().catch((err) => say(err.message, true));
  });
  stream.onJob(() => refresh().catch((err) => say(err.message, true)));
  state.stream = stream.connect();
}

async function find(accountId) {
  say("");
  try {
    const view = await api(`/console/api/accounts/${encodeURIComponent(accountId)}`);
    state.accountId = view.account.account_id;
    $("account-id").textContent = state.accountId;
    $("account").hidden = false;
    showOverview(view);
    await loadEntries(true);
    follow(state.accountId);
  } catch (err) {
    $("account").hidden = true;
    say(err.message, true);
  }
}

async function act(run, done) {
  try {
    const answer = await run();
    showFigures(answer.account);
    say(done(answer));
    await refresh();
  } catch (err) {
    say(err.message, true);
  }
}

function release(holdId) {
  return act(
    () => api(`/console/api/holds/${encodeURIComponent(holdId)}/release`, {
      method: "POST", body: { reason: $("release-reason").value },
    }),
    () => `Released ${holdId}`,
  );
}

function grant(event) {
  event.preventDefault();
  const body = { amount: Number($("grant-amount").value), reason: $("grant-reason").value };
  const expires = $("grant-expires").value;
  if (expires) body.expires_at = new Date(expires).toISOString();
  const id = encodeURIComponent(state.accountId);
  return act(
    () => api(`/console/api/accounts/${id}/grants`, { method: "POST", body }),
    (answer) => `Granted ${answer.grant.amount} credits (${answer.grant.grant_id})`,
  );
}

function refund(event) {
  event.preventDefault();
  const body = { [$("refund-kind").value]: $("refund-id").value, reason: $("refund-reason").value };
  if ($("refund-amount").value) body.amount = Number($("refund-amount").value);
  return act(
    () => api("/console/api/refunds", { method: "POST", body }),
    (answer) => `Refunded ${answer.refund.amount} credits (${answer.refund.refund_id})`,
  );
}

async function endpointAction(run, done) {
  try {
    say(done(await run()));
    await showWebhooks();
  } catch (err) {
    say(err.message, true);
  }
}

function button(text, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.addEventListener("click", onClick);
  return element;
}

// enable again, send a test event, resend an account's events from a seq: each a CSRF-checked
// POST that runs what the /v1 route runs
function endpointControls(endpoint) {
  const base = `/console/api/webhook-endpoints/${encodeURIComponent(endpoint.id)}`;
  const controls = document.createElement("div");
  controls.className = "endpoint-controls";
  if (endpoint.status === "disabled") {
    controls.append(button("Enable again", () => endpointAction(
      () => api(`${base}/enable`, { method: "POST", body: {} }),
      (answer) => `${answer.url} is ${answer.status}`,
    )));
  }
  controls.append(button("Send a test event", () => endpointAction(
    () => api(`${base}/test`, { method: "POST", body: {} }),
    (answer) => answer.ok ? `Test event answered ${answer.status_code}`
                          : `Test event failed: ${answer.error ?? answer.status_code}`,
  )));
  const form = document.createElement("form");
  const account = Object.assign(document.createElement("input"),
                                { placeholder: "account id", required: true, name: "account_id" });
  const fromSeq = Object.assign(document.createElement("input"),
                                { type: "number", min: "1", placeholder: "from seq", required: true,
                                  name: "from_seq" });
  const submit = Object.assign(document.createElement("button"),
                               { type: "submit", textContent: "Resend from seq" });
  form.append(account, fromSeq, submit);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    endpointAction(
      () => api(`${base}/resend`, { method: "POST",
                                    body: { account_id: account.value.trim(),
                                            from_seq: Number(fromSeq.value) } }),
      (answer) => `${answer.events} events of ${answer.account_id} from seq ${answer.from_seq} will be sent again`,
    );
  });
  controls.append(form);
  return controls;
}

async function showWebhooks() {
  try {
    const { endpoints } = await api("/console/api/webhook-endpoints");
    const list = $("webhook-list");
    list.replaceChildren();
    for (const endpoint of endpoints) {
      const title = document.createElement("h3");
      title.textContent = `${endpoint.url} — ${endpoint.status ?? ""} ${endpoint.disabled_reason ?? ""}`;
      const table = document.createElement("table");
      table.createTBody();
      for (const d of endpoint.deliveries) {
        const row = table.tBodies[0].insertRow();
        for (const v of [d.event_type ?? d.type, d.seq, d.status_code, d.error, d.attempted_at ?? d.created_at]) {
          cell(row, v);
        }
      }
      list.append(title, endpointControls(endpoint), table);
    }
    if (!endpoints.length) list.textContent = "No webhook endpoints.";
    $("webhooks").hidden = false;
  } catch (err) {
    say(err.message, true);
  }
}

async function signOut() {
  try {
    await api("/console/sign-out", { method: "POST", body: {} });
  } finally {
    state.stream?.close();
    location.replace("/console");
  }
}

async function start() {
  try {
    const session = await api("/console/api/session");
    state.csrf = session.csrf_token;
    $("who").textContent = `${session.operator} (until ${session.expires_at})`;
    $("signed-in").hidden = false;
    $("sign-out").hidden = false;
  } catch (err) {
    $("signed-out").hidden = false;
    return;
  }
  $("find-form").addEventListener("submit", (event) => {
    event.preventDefault();
    find($("account-input").value.trim());
  });
  $("grant-form").addEventListener("submit", grant);
  $("refund-form").addEventListener("submit", refund);
  $("show-webhooks").addEventListener("click", showWebhooks);
  $("more-entries").addEventListener("click", () => loadOlder().catch((err) => say(err.message, true)));
  $("sign-out").addEventListener("click", signOut);
  document.body.dataset.ready = "true";
}

start();
