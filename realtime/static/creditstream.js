/**
 * creditstream.js: live credits in the browser (SPEC section 4). An ES module with no build step
 * and no dependencies.
 *
 *   import { CreditStream } from "/static/creditstream.js";
 *   const stream = new CreditStream({ token, accountId, getToken: askMyBackendForAToken,
 *                                     tickets: true });
 *   stream.onBalance((account) => render(account.available));
 *   stream.connect();
 *
 * Transports, best first: WebSocket, then Server-Sent Events, then long-polling. Every event
 * carries the account's `seq`. The SDK remembers the last one it delivered, resumes from it after
 * any reconnect or change of transport, and drops anything at or below it. So each callback sees
 * each event once, in order, whichever transport brought it.
 *
 * Stream tickets: a WebSocket or an EventSource cannot send an Authorization header, so by default
 * the token travels as `?token=`, and URLs end up in proxies' logs and browser histories. With
 * `tickets: true` the SDK asks `POST /v1/stream-tickets` (with its token, in the header) for a
 * one-use ticket before each WebSocket or SSE connection and sends `?ticket=` instead; or pass
 * `ticket: async () => "st_…"` to get tickets some other way (your backend, with its server key).
 */

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;
const POLL_WAIT_S = 25;
const FAILURES_BEFORE_FALLBACK = 2;
const TRANSPORTS = ["websocket", "sse", "polling"];
const EVENT_TYPES = ["balance.updated", "job.updated", "credits.low"];

export class CreditStream {
  constructor({ baseUrl = location.origin, token, accountId, getToken, ticket, tickets } = {}) {
    this.baseUrl = String(baseUrl).replace(/\/+$/, "");
    this.token = token;
    this.getToken = getToken;
    this.getTicket = ticket ?? (tickets ? () => this._fetchTicket() : null);
    // A user token names its account in `sub`, so the id is optional in the common case.
    this.accountId = accountId ?? claims(token).sub;
    this.snapshot = null; // account state: balance, held, available, seq, ...
    this.lastSeq = null; // null until the first snapshot, so the first subscribe asks for one
    this.state = "offline";
    this.stopReason = null; // why the stream gave up (a rejected token, a forbidden account)
    this._handlers = { balance: new Set(), job: new Set(), low: new Set(), state: new Set() };
    this._level = 0; // index into TRANSPORTS
    this._failures = 0; // consecutive failures to open the current transport
    this._attempt = 0; // backoff exponent; every successful open resets it
    this._worked = new Set(); // transports that have opened at least once
    this._gen = 0; // bumped by every teardown: callbacks of an older connection are ignored
    this._stopped = true;
    this._refreshToken = false;
  }

  /** Each `on…` registers a callback and returns a function that removes it. */
  onBalance(fn) { return this._on("balance", fn); } // fn(snapshot, message)
  onJob(fn) { return this._on("job", fn); } // fn(job, message)
  onLow(fn) { return this._on("low", fn); } // fn(message): {available, threshold, ...}
  onState(fn) { return this._on("state", fn); } // fn("websocket" | "sse" | "polling" | "offline")

  connect() {
    this._stopped = false;
    this.stopReason = null;
    this._open();
    return this;
  }

  close() {
    this._halt(null);
  }

  // -- connection management ---------------------------------------------------------------

  async _open() {
    const gen = this._teardown();
    if (this._stopped) return;
    // An EventSource cannot see a 401, so an expired token is caught here, before it is sent.
    if (this.getToken && (this._refreshToken || expired(this.token))) {
      try {
        const token = await this.getToken();
        if (gen !== this._gen) return;
        if (!token) return this._halt("no token");
        this.token = token;
        this._refreshToken = false;
      } catch (err) {
        return this._retry(gen, false); // the token service may be down too; try again later
      }
    }
    const kind = TRANSPORTS[this._level];
    if (kind === "polling") return this._poll(gen); // its token goes in a header, not the URL
    if ((kind === "websocket" && typeof WebSocket === "undefined") ||
        (kind === "sse" && typeof EventSource === "undefined")) return this._skip();
    const credential = { token: this.token };
    if (this.getTicket) {
      try {
        credential.ticket = await this.getTicket(); // one per connection: a ticket opens one
        if (gen !== this._gen) return;
      } catch (err) {
        if (gen !== this._gen) return;
        if (err.status === 401) return this._tokenRejected(gen);
        if (err.status === 403) return this._halt("forbidden");
        return this._retry(gen, false);
      }
    }
    if (kind === "websocket") this._openWebSocket(gen, credential);
    else this._openSse(gen, credential);
  }

  /** A one-use stream ticket for this account, made with the token (`tickets: true`). */
  async _fetchTicket() {
    const response = await fetch(`${this.baseUrl}/v1/stream-tickets`, {
      method: "POST", cache: "no-store",
      headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ account_id: this.accountId }),
    });
    if (!response.ok) throw Object.assign(new Error(`HTTP ${response.status}`), { status: response.status });
    return (await response.json()).ticket;
  }

  /** `?ticket=` when there is one, else `?token=`. */
  _credentialQuery(credential) {
    return credential.ticket ? { ticket: credential.ticket } : { token: credential.token };
  }

  /** Called when a connection ended or could not be made; schedules the next try. */
  _retry(gen, failedToOpen) {
    if (gen !== this._gen || this._stopped) return;
    this._teardown();
    this._setState("offline");
    // Two failures in a row mean this transport is blocked (a proxy, an extension), so step
    // down. Not if it has worked before on this page: then the server is just away (a restart,
    // a deploy) and stepping down would leave us on a worse transport once it is back. If even
    // polling never worked, nothing has, so start over from the top.
    if (failedToOpen && ++this._failures >= FAILURES_BEFORE_FALLBACK &&
        !this._worked.has(TRANSPORTS[this._level])) {
      this._level = (this._level + 1) % TRANSPORTS.length;
      this._failures = 0;
    }
    // Full jitter: after an outage, thousands of tabs must not come back in the same instant.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(this._attempt++, 16));
    this._timer = setTimeout(() => this._open(), Math.random() * ceiling);
  }

  _opened(kind) {
    this._failures = 0;
    this._attempt = 0;
    this._worked.add(kind);
    this._setState(kind);
  }

  /** Closes whatever is open and invalidates its callbacks; returns the new generation. */
  _teardown() {
    clearTimeout(this._timer);
    clearInterval(this._pinger);
    if (this._ws) {
      this._ws.onclose = this._ws.onmessage = null;
      try { this._ws.close(1000); } catch (err) { /* already closing */ }
    }
    this._es?.close();
    this._abort?.abort();
    this._ws = this._es = this._abort = null;
    return ++this._gen;
  }

  _halt(reason) {
    this._stopped = true;
    this.stopReason = reason;
    this._teardown();
    this._setState("offline");
  }

  _tokenRejected(gen) {
    if (!this.getToken) return this._halt("token rejected");
    this._refreshToken = true;
    this._retry(gen, false); // with backoff, in case getToken keeps handing out a bad token
  }

  // -- transports ---------------------------------------------------------------------------

  _openWebSocket(gen, credential) {
    const query = new URLSearchParams(this._credentialQuery(credential));
    const url = `${this.baseUrl.replace(/^http/, "ws")}/v1/stream?${query}`;
    const ws = (this._ws = new WebSocket(url));
    let greeted = false;
    let lastHeard = Date.now();
    ws.onmessage = (e) => {
      lastHeard = Date.now();
      const msg = JSON.parse(e.data);
      if (msg.type !== "hello") return this._handle(msg);
      // `hello`, not `open`, proves the endpoint is ours: some proxies accept and then drop.
      greeted = true;
      this._opened("websocket");
      const subscribe = { op: "subscribe", account_id: this.accountId };
      if (this.lastSeq !== null) subscribe.after_seq = this.lastSeq;
      ws.send(JSON.stringify(subscribe));
      const beatMs = msg.heartbeat_s * 1000;
      this._pinger = setInterval(() => {
        // A half-open connection (laptop lid, lost Wi-Fi) may never fire `close`; two silent
        // beats with pings unanswered mean it is gone.
        if (Date.now() - lastHeard > 2 * beatMs) return this._retry(gen, false);
        ws.send('{"op":"ping"}');
      }, beatMs / 2);
    };
    // `error` is always followed by `close`, so `close` alone decides what happens next.
    ws.onclose = (e) => {
      if (gen !== this._gen) return;
      // a ticket refused (used, expired) is retried with a new one; the ticket request itself
      // tells whether the token is still good
      if (e.code === 4401) return credential.ticket ? this._retry(gen, false) : this._tokenRejected(gen);
      if (e.code === 4403) return this._halt("forbidden");
      this._retry(gen, !greeted); // 1012 restart, 1013 slow consumer, 4408, network: resume
    };
  }

  _openSse(gen, credential) {
    const query = new URLSearchParams({ ...this._credentialQuery(credential), account_id: this.accountId });
    if (this.lastSeq !== null) query.set("after_seq", this.lastSeq);
    const es = (this._es = new EventSource(`${this.baseUrl}/v1/stream/sse?${query}`));
    let opened = false;
    es.onopen = () => {
      if (gen !== this._gen) return;
      opened = true;
      this._opened("sse");
    };
    // EventSource would reconnect by itself, but with the old token, no jitter, and no way to
    // tell a 401 from a dead network; `_retry` closes it and reconnects our way instead.
    es.onerror = () => this._retry(gen, !opened);
    for (const type of ["snapshot", ...EVENT_TYPES]) {
      es.addEventListener(type, (e) => gen === this._gen && this._handle(JSON.parse(e.data)));
    }
  }

  async _poll(gen) {
    const abort = (this._abort = new AbortController());
    const account = `${this.baseUrl}/v1/accounts/${encodeURIComponent(this.accountId)}`;
    let opened = false;
    const get = async (url) => {
      const response = await fetch(url, {
        headers: { Authorization: `Bearer ${this.token}` }, signal: abort.signal, cache: "no-store",
      });
      if (!response.ok) throw Object.assign(new Error(`HTTP ${response.status}`), { status: response.status });
      const body = await response.json();
      if (gen === this._gen && !opened) {
        opened = true;
        this._opened("polling");
      }
      return body;
    };
    try {
      if (this.lastSeq === null) {
        const snapshot = await get(account);
        if (gen !== this._gen) return;
        this._handle({ type: "snapshot", account_id: this.accountId, account: snapshot, seq: snapshot.seq });
      }
      while (gen === this._gen) {
        const started = Date.now();
        const page = await get(`${account}/events?after_seq=${this.lastSeq}&wait=${POLL_WAIT_S}`);
        if (gen !== this._gen) return;
        page.events.forEach((event) => this._handle(event));
        // A server that answers an empty page at once (no long-poll support) must not be hammered.
        if (!page.events.length && Date.now() - started < 1000) await sleep(1000);
      }
    } catch (err) {
      if (gen !== this._gen) return;
      if (err.status === 401) return this._tokenRejected(gen);
      if (err.status === 403) return this._halt("forbidden");
      this._retry(gen, !opened);
    }
  }

  /** The browser lacks this transport altogether: step down now, without counting failures. */
  _skip() {
    this._level = (this._level + 1) % TRANSPORTS.length;
    this._failures = 0;
    this._open();
  }

  // -- messages -----------------------------------------------------------------------------

  _handle(msg) {
    if (msg.type === "snapshot") {
      // The whole state at its seq; also sent with `reset: true` when our seq is unknown to
      // the server (beyond retention, a restored database), so it replaces ours outright.
      this.snapshot = msg.account ? { ...msg.account } : null;
      this.lastSeq = msg.seq;
      if (this.snapshot) this._emit("balance", { ...this.snapshot }, msg);
      return;
    }
    if (!EVENT_TYPES.includes(msg.type)) return; // subscribed, pong, refreshed, error
    if (this.lastSeq !== null && msg.seq <= this.lastSeq) return; // seen via another connection
    this.lastSeq = msg.seq;
    const state = (this.snapshot ??= { account_id: msg.account_id });
    state.seq = msg.seq;
    if (msg.type === "balance.updated") {
      Object.assign(state, { balance: msg.balance, held: msg.held, available: msg.available });
      this._emit("balance", { ...state }, msg);
    } else if (msg.type === "job.updated") {
      this._emit("job", msg.job, msg);
    } else {
      this._emit("low", msg);
    }
  }

  _on(kind, fn) {
    this._handlers[kind].add(fn);
    return () => this._handlers[kind].delete(fn);
  }

  _emit(kind, ...args) {
    for (const fn of [...this._handlers[kind]]) {
      try {
        fn(...args);
      } catch (err) {
        console.error("creditstream: a callback threw", err); // one bad callback must not stop the stream
      }
    }
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this._emit("state", state);
  }
}

/** A JWT's claims, read without verifying: only to learn `sub` and `exp`. */
function claims(token) {
  try {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  } catch (err) {
    return {};
  }
}

function expired(token) {
  const { exp } = claims(token);
  return typeof exp === "number" && exp * 1000 < Date.now() + 5000;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export default CreditStream;
