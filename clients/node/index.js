// creditstream's Node client for server code: Node 20's fetch and crypto, no dependencies.
//
// Every POST carries an Idempotency-Key (a random UUID per call, or the caller's), the same on
// each attempt; a call is retried with exponential backoff and full jitter (each wait capped at
// maxDelayMs) on 503 (502, 504), 429 with a Retry-After that fits, 409 `request_in_progress`,
// timeouts and dropped connections, for up to retryBudgetMs (30 s: longer than a database
// failover), so an answer lost on the way is replayed by the server rather than applied twice.
// Only a GET, PUT or DELETE, or a request with an Idempotency-Key, is ever repeated. Other 4xx
// answers throw at once, as typed errors built from the envelope {"error": {"code", "message",
// ...details}}.

import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";

export const VERSION = "0.1.0";

/** An answer that is not a success, or no answer at all (`status` 0). */
export class CreditstreamError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {Record<string, any>} [body] the error object, details included
   */
  constructor(status, code, message, body = {}) {
    super(message);  // the server's own words, e.g. "Insufficient credits. You need 72 more …"
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.body = body;
  }
}
/** No answer after every attempt; a POST may have been applied (retry it with its key). */
export class ConnectionFailed extends CreditstreamError {}
export class BadRequest extends CreditstreamError {}
export class AuthenticationError extends CreditstreamError {}
export class InsufficientCredits extends CreditstreamError {
  /** @returns {number} */ get required() { return Number(this.body.required ?? 0); }
  /** @returns {number} */ get available() { return Number(this.body.available ?? 0); }
  /** @returns {number} */ get shortfall() { return Number(this.body.shortfall ?? 0); }
}
export class PermissionDenied extends CreditstreamError {}
export class NotFound extends CreditstreamError {}
export class Conflict extends CreditstreamError {}
export class InvalidState extends Conflict {}
export class RefundExceedsSpend extends Conflict {
  /** @returns {number} */ get refundable() { return Number(this.body.refundable ?? 0); }
}
export class RequestInProgress extends Conflict {}
export class ProviderTaskConflict extends Conflict {}
export class PayloadTooLarge extends CreditstreamError {}
export class ValidationError extends CreditstreamError {
  /** @returns {any[]} */
  get errors() { return Array.isArray(this.body.errors) ? this.body.errors : []; }
}
export class IdempotencyKeyReused extends ValidationError {}
export class RateLimited extends CreditstreamError {
  /** @returns {number | null} seconds, when the server said */
  get retryAfter() {
    return typeof this.body.retry_after === "number" ? this.body.retry_after : null;
  }
}
export class DailyLimitExceeded extends RateLimited {}
export class FeatureLimitExceeded extends RateLimited {}
export class Unavailable extends CreditstreamError {}

const BY_CODE = {
  insufficient_credits: InsufficientCredits,
  invalid_state: InvalidState,
  refund_exceeds_spend: RefundExceedsSpend,
  request_in_progress: RequestInProgress,
  provider_task_conflict: ProviderTaskConflict,
  idempotency_key_reused: IdempotencyKeyReused,
  daily_limit_exceeded: DailyLimitExceeded,
  feature_limit_exceeded: FeatureLimitExceeded,
};
const BY_STATUS = {
  400: BadRequest, 401: AuthenticationError, 402: InsufficientCredits, 403: PermissionDenied,
  404: NotFound, 409: Conflict, 413: PayloadTooLarge, 422: ValidationError, 429: RateLimited,
  503: Unavailable,
};

/**
 * The typed error for an answer's status and decoded body (chosen by code, then by status).
 * @param {number} status
 * @param {any} payload
 * @returns {CreditstreamError}
 */
export function errorFromResponse(status, payload) {
  const body = payload && typeof payload.error === "object" && payload.error ? payload.error : {};
  const code = String(body.code || `http_${status}`);
  const message = String(body.message || `HTTP ${status}`);
  const Cls = BY_CODE[code] || BY_STATUS[status] || CreditstreamError;
  return new Cls(status, code, message, body);
}

/**
 * Verify an outbound webhook's `X-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` on the
 * raw body (a Buffer or the exact string received), in constant time.
 * @param {string} secret the endpoint's `whsec_…` secret
 * @param {Buffer | Uint8Array | string} rawBody
 * @param {string | null | undefined} signatureHeader
 * @param {{toleranceS?: number, now?: number}} [options] `now` in unix seconds (default: now)
 * @returns {boolean}
 */
export function verifyWebhook(secret, rawBody, signatureHeader, { toleranceS = 300, now } = {}) {
  if (!signatureHeader) return false;
  let timestamp = null;
  const candidates = [];
  for (const part of String(signatureHeader).split(",")) {
    const at = part.indexOf("=");
    if (at < 0) continue;
    const name = part.slice(0, at).trim();
    const value = part.slice(at + 1).trim();
    if (name === "t" && /^[0-9]{1,12}$/.test(value)) timestamp = Number(value);
    else if (name === "v1" && /^[0-9a-f]{64}$/i.test(value)) candidates.push(value.toLowerCase());
  }
  if (timestamp === null || candidates.length === 0) return false;
  const current = now ?? Date.now() / 1000;
  if (Math.abs(current - timestamp) > toleranceS) return false;
  const body = typeof rawBody === "string" ? Buffer.from(rawBody, "utf8") : Buffer.from(rawBody);
  const expected = createHmac("sha256", secret)
    .update(Buffer.concat([Buffer.from(`${timestamp}.`), body])).digest();
  let matched = false;
  for (const candidate of candidates) {  // every one compared: timing says nothing of which
    matched = timingSafeEqual(expected, Buffer.from(candidate, "hex")) || matched;
  }
  return matched;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const seg = (value) => encodeURIComponent(String(value));
const compact = (object) =>
  Object.fromEntries(Object.entries(object ?? {}).filter(([, v]) => v !== undefined && v !== null));

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);
const RETRYABLE_STATUSES = new Set([429, 502, 503, 504]);

/** Seconds from a Retry-After header, or null (absent, a date, or nonsense). */
function retryAfterOf(response) {
  const seconds = Number.parseFloat(response.headers.get("retry-after") ?? "");
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

/** A failure of fetch itself: refused, reset, closed early, or the attempt's timeout. */
function isNetworkFailure(error) {
  return error instanceof TypeError
    || (error && (error.name === "TimeoutError" || error.name === "AbortError"));
}

export class CreditstreamClient {
  /**
   * @param {{baseUrl: string, key: string, timeoutMs?: number, maxAttempts?: number,
   *          baseDelayMs?: number, maxDelayMs?: number, retryBudgetMs?: number,
   *          fetch?: typeof fetch}} options
   */
  constructor({ baseUrl, key, timeoutMs = 10_000, maxAttempts = Infinity, baseDelayMs = 250,
                maxDelayMs = 2_000, retryBudgetMs = 30_000,
                fetch: fetchImpl = globalThis.fetch }) {
    if (!baseUrl || !key) throw new TypeError("CreditstreamClient needs baseUrl and key");
    if (!(maxAttempts >= 1)) throw new TypeError("maxAttempts must be at least 1");
    if (!(retryBudgetMs >= 0)) throw new TypeError("retryBudgetMs must not be negative");
    this.baseUrl = String(baseUrl).replace(/\/+$/, "");
    this.key = key;
    this.timeoutMs = timeoutMs;
    this.maxAttempts = maxAttempts;
    this.baseDelayMs = baseDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.retryBudgetMs = retryBudgetMs;
    this.fetch = fetchImpl;
  }

  /** Full jitter over an exponentially growing window capped at maxDelayMs, never below the
   * server's Retry-After. */
  delayMs(attempt, retryAfterS = null) {
    const window = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(attempt - 1, 30));
    let wait = Math.random() * window;
    if (retryAfterS !== null && Number.isFinite(retryAfterS)) {
      wait = Math.max(wait, retryAfterS * 1000);
    }
    return wait;
  }

  /** The wait before the next attempt, or null: give up (not repeatable, out of attempts, or
   * out of budget — no attempt starts later than retryBudgetMs after the call began). */
  nextWaitMs(attempt, startedAt, repeatable, retryAfterS = null) {
    if (!repeatable || attempt >= this.maxAttempts) return null;
    const left = this.retryBudgetMs - (Date.now() - startedAt);
    if (left <= 0 || (retryAfterS !== null && retryAfterS * 1000 > left)) return null;
    return Math.min(this.delayMs(attempt, retryAfterS), left);
  }

  /**
   * One logical call, tried up to maxAttempts times with the same Idempotency-Key.
   * @param {string} method
   * @param {string} path
   * @param {{body?: any, query?: Record<string, any>, idempotencyKey?: string,
   *          extraTimeoutMs?: number}} [options]
   */
  async request(method, path, { body, query, idempotencyKey, extraTimeoutMs = 0 } = {}) {
    const params = new URLSearchParams(compact(query));
    const url = this.baseUrl + path + (params.size ? `?${params}` : "");
    const headers = { Authorization: `Bearer ${this.key}`, Accept: "application/json",
                      "User-Agent": `creditstream-client-node/${VERSION}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method === "POST") headers["Idempotency-Key"] = idempotencyKey || randomUUID();
    const repeatable = SAFE_METHODS.has(method) || Boolean(headers["Idempotency-Key"]);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const startedAt = Date.now();
    const summary = (attempt) => `gave up after ${attempt} attempt(s) in `
      + `${((Date.now() - startedAt) / 1000).toFixed(1)} s (retry budget `
      + `${this.retryBudgetMs / 1000} s)`;
    for (let attempt = 1; ; attempt++) {
      let response;
      let decoded = null;
      try {
        response = await this.fetch(url, {
          method, headers, body: payload,
          signal: AbortSignal.timeout(this.timeoutMs + extraTimeoutMs) });
        const text = await response.text();
        try { decoded = text ? JSON.parse(text) : null; } catch { decoded = null; }
      } catch (error) {  // no answer, or its body was cut off
        if (!isNetworkFailure(error)) throw error;
        const wait = this.nextWaitMs(attempt, startedAt, repeatable);
        if (wait === null) {
          const failed = new ConnectionFailed(0, "connection_error",
            `no answer: ${error.cause?.code || error.name}: ${error.message} `
              + `(${summary(attempt)}; last answer: none)`,
            { cause: String(error.cause ?? error) });
          failed.attempts = attempt;
          throw failed;
        }
        await sleep(wait);
        continue;
      }
      if (response.ok) return decoded;
      const failure = errorFromResponse(response.status, decoded);
      failure.attempts = attempt;
      const retryable = RETRYABLE_STATUSES.has(response.status)
        || (response.status === 409 && failure.code === "request_in_progress");
      const retryAfter = retryAfterOf(response);
      // a 429 without Retry-After does not say when its limit lifts: waiting blindly won't help
      const wait = !retryable || (response.status === 429 && retryAfter === null) ? null
        : this.nextWaitMs(attempt, startedAt, repeatable, retryAfter);
      if (wait === null) {
        if (retryable && attempt > 1) {
          failure.message += ` (${summary(attempt)}; last answer ${response.status})`;
        }
        throw failure;
      }
      await sleep(wait);
    }
  }

  // -- accounts ------------------------------------------------------------------------------
  ensureAccount(accountId) { return this.request("PUT", `/v1/accounts/${seg(accountId)}`); }
  getAccount(accountId) { return this.request("GET", `/v1/accounts/${seg(accountId)}`); }
  listEntries(accountId, { after, limit } = {}) {
    return this.request("GET", `/v1/accounts/${seg(accountId)}/entries`,
      { query: { after, limit } });
  }
  listEvents(accountId, { afterSeq, limit, wait } = {}) {
    return this.request("GET", `/v1/accounts/${seg(accountId)}/events`,
      { query: { after_seq: afterSeq, limit, wait }, extraTimeoutMs: (wait ?? 0) * 1000 });
  }
  getUsage(accountId, period) {
    return this.request("GET", `/v1/accounts/${seg(accountId)}/usage`, { query: { period } });
  }
  listJobs(accountId, { status, limit } = {}) {
    return this.request("GET", `/v1/accounts/${seg(accountId)}/jobs`, { query: { status, limit } });
  }
  createGrant(accountId, body, { idempotencyKey } = {}) {
    return this.request("POST", `/v1/accounts/${seg(accountId)}/grants`,
      { body: compact(body), idempotencyKey });
  }
  createCharge(accountId, body, { idempotencyKey } = {}) {
    return this.request("POST", `/v1/accounts/${seg(accountId)}/charges`,
      { body: compact(body), idempotencyKey });
  }

  // -- holds and refunds ---------------------------------------------------------------------
  createHold(body, { idempotencyKey } = {}) {
    return this.request("POST", "/v1/holds", { body: compact(body), idempotencyKey });
  }
  getHold(holdId) { return this.request("GET", `/v1/holds/${seg(holdId)}`); }
  captureHold(holdId, body = {}, { idempotencyKey } = {}) {
    return this.request("POST", `/v1/holds/${seg(holdId)}/capture`,
      { body: compact(body), idempotencyKey });
  }
  releaseHold(holdId, body = {}, { idempotencyKey } = {}) {
    return this.request("POST", `/v1/holds/${seg(holdId)}/release`,
      { body: compact(body), idempotencyKey });
  }
  createRefund(body, { idempotencyKey } = {}) {
    return this.request("POST", "/v1/refunds", { body: compact(body), idempotencyKey });
  }

  // -- jobs, prices, batch, tokens -----------------------------------------------------------
  createJob(body, { idempotencyKey } = {}) {
    return this.request("POST", "/v1/jobs", { body: compact(body), idempotencyKey });
  }
  getJob(jobId) { return this.request("GET", `/v1/jobs/${seg(jobId)}`); }
  reportJobResult(jobId, body) {
    return this.request("POST", `/v1/jobs/${seg(jobId)}/result`, { body: compact(body) });
  }
  quote(body) { return this.request("POST", "/v1/quote", { body: compact(body) }); }
  getPricing() { return this.request("GET", "/v1/pricing"); }
  getPlans() { return this.request("GET", "/v1/plans"); }
  batch(operations, { idempotencyKey } = {}) {
    return this.request("POST", "/v1/batch", { body: { operations }, idempotencyKey });
  }
  createToken(accountId, { ttlSeconds } = {}) {
    return this.request("POST", "/v1/tokens",
      { body: compact({ account_id: accountId, ttl_seconds: ttlSeconds }) });
  }

  // -- outbound webhook endpoints ------------------------------------------------------------
  createWebhookEndpoint(body, { idempotencyKey } = {}) {
    return this.request("POST", "/v1/webhook-endpoints", { body: compact(body), idempotencyKey });
  }
  listWebhookEndpoints() { return this.request("GET", "/v1/webhook-endpoints"); }
  deleteWebhookEndpoint(endpointId) {
    return this.request("DELETE", `/v1/webhook-endpoints/${seg(endpointId)}`);
  }
  listWebhookDeliveries(endpointId, { limit } = {}) {
    return this.request("GET", `/v1/webhook-endpoints/${seg(endpointId)}/deliveries`,
      { query: { limit } });
  }
  /** A disabled endpoint enabled again (what accumulated meanwhile is delivered, in order). */
  enableWebhookEndpoint(endpointId) {
    return this.request("POST", `/v1/webhook-endpoints/${seg(endpointId)}/enable`);
  }
  /** One signed `webhook.test` event sent now; answers the attempt's outcome. */
  testWebhookEndpoint(endpointId) {
    return this.request("POST", `/v1/webhook-endpoints/${seg(endpointId)}/test`);
  }
  /** The account's events from `from_seq` delivered again (at least once: dedupe by seq). */
  resendWebhookEvents(endpointId, body) {
    return this.request("POST", `/v1/webhook-endpoints/${seg(endpointId)}/resend`,
      { body: compact(body) });
  }
}
