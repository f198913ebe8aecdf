// Types of creditstream-client (index.js). The results mirror the API's JSON (README, "HTTP API").

export declare const VERSION: string;

export interface Price { operation: string; model?: string; params?: Record<string, unknown>; }
export type Metadata = Record<string, string | number | boolean | null>;

export interface Account {
  account_id: string; balance: number; held: number; available: number; plan: string | null;
  trial: { active: boolean; expires_at: string | null; daily_limit: number; spent_today: number };
  seq: number; created_at: string;
}
export interface Funding { grant_id: string; kind: string; amount: number; [k: string]: unknown; }
export interface Grant {
  grant_id: string; account_id: string; amount: number; remaining: number; reserved: number;
  reason: string; kind: string; ref: string | null; metadata: Metadata | null;
  expires_at: string | null; created_at: string;
}
export interface Hold {
  hold_id: string; account_id: string; amount: number;
  status: "open" | "captured" | "released" | "expired"; ref: string | null;
  captured_amount: number | null; release_reason: string | null; funding: Funding[] | null;
  allocation: Funding[] | null; metadata: Metadata | null; price: Record<string, unknown> | null;
  job_id: string | null; created_at: string; expires_at: string; closed_at: string | null;
}
export interface Charge {
  charge_id: string; account_id: string; amount: number; reason: string; ref: string | null;
  funding: Funding[]; metadata: Metadata | null; price: Record<string, unknown> | null;
  created_at: string;
}
export interface Refund {
  refund_id: string; account_id: string; charge_id: string | null; hold_id: string | null;
  amount: number; reason: string; funding: Funding[]; spent: number; refunded: number;
  refundable: number; metadata: Metadata | null; created_at: string;
}
export interface Job {
  job_id: string; account_id: string; status: "processing" | "success" | "failed";
  operation: string; model: string | null; params: Record<string, unknown> | null; cost: number;
  result_url: string | null; error: string | null; provider: string;
  provider_task_id: string | null; hold_id: string | null; created_at: string;
  updated_at: string | null; expires_at: string | null; completed_at: string | null;
  metadata: Metadata | null;
}
export interface Entry {
  entry_id: number; account_id: string; seq: number; type: string; amount: number;
  delta: number; held_delta: number; reason: string | null; ref: string | null;
  op_id: string | null; idempotency_key: string | null; metadata: Metadata; created_at: string;
}
export interface StreamEvent { type: string; account_id: string; seq: number; [k: string]: unknown; }
export interface Quote {
  cost: number; account_id?: string; available?: number; affordable?: boolean;
  shortfall?: number; daily_limit_remaining?: number; feature_limit?: Record<string, unknown>;
}
export interface WebhookEndpoint {
  id: string; url: string; events: string[]; status: "enabled" | "disabled";
  disabled_reason: string | null; created_at: string; disabled_at: string | null;
  failing_since: string | null; consecutive_failures: number; next_attempt_at: string | null;
  secret?: string; deleted?: boolean;
}
export interface WebhookTestOutcome {
  ok: boolean; status_code: number | null; error: string | null; duration_ms: number;
  event: { type: "webhook.test"; id: string; endpoint_id: string; created_at: string };
}
export interface Usage {
  account_id: string; period: string; since: string; credits_used: number;
  credits_refunded: number; operations: Record<string, { count: number; credits: number }>;
  models: Record<string, { count: number; credits: number }>;
  days: Array<Record<string, unknown>>; jobs: { processing: number; success: number; failed: number };
}

export interface CallOptions { idempotencyKey?: string; }
export type BatchOperation =
  | ({ op: "hold"; account_id: string; amount?: number; price?: Price; ref?: string; ttl_seconds?: number; metadata?: Metadata })
  | ({ op: "capture"; hold_id: string; amount?: number })
  | ({ op: "release"; hold_id: string; reason?: string })
  | ({ op: "charge"; account_id: string; amount?: number; price?: Price; reason?: string; ref?: string; metadata?: Metadata })
  | ({ op: "grant"; account_id: string; amount?: number; plan?: string; tier?: number | string; reason?: string; expires_at?: string; ref?: string; metadata?: Metadata });

export interface ClientOptions {
  baseUrl: string;
  /** a server key (`sk_…`) or a user token */
  key: string;
  /** per attempt (default 10000) */
  timeoutMs?: number;
  /** at most this many attempts per call (default Infinity: only the budget bounds a call) */
  maxAttempts?: number;
  /** the first backoff window (default 250); it doubles per attempt, with full jitter */
  baseDelayMs?: number;
  /** the cap on each wait between attempts (default 2000) */
  maxDelayMs?: number;
  /** no attempt starts later than this after the call began (default 30000: outlasts a
   *  database failover); retried: 503, 502, 504, 429 with a Retry-After that fits,
   *  409 request_in_progress, timeouts and dropped connections */
  retryBudgetMs?: number;
  fetch?: typeof fetch;
}

export declare class CreditstreamClient {
  constructor(options: ClientOptions);
  readonly baseUrl: string;
  delayMs(attempt: number, retryAfterS?: number | null): number;
  nextWaitMs(attempt: number, startedAt: number, repeatable: boolean,
             retryAfterS?: number | null): number | null;
  request<T = unknown>(method: string, path: string, options?: {
    body?: unknown; query?: Record<string, unknown>; idempotencyKey?: string; extraTimeoutMs?: number;
  }): Promise<T>;

  ensureAccount(accountId: string): Promise<Account>;
  getAccount(accountId: string): Promise<Account>;
  listEntries(accountId: string, options?: { after?: number; limit?: number }):
    Promise<{ entries: Entry[]; has_more: boolean; next_after: number }>;
  listEvents(accountId: string, options?: { afterSeq?: number; limit?: number; wait?: number }):
    Promise<{ account_id: string; events: StreamEvent[]; seq: number; next_after_seq: number; reset?: boolean }>;
  getUsage(accountId: string, period?: "day" | "week" | "month"): Promise<Usage>;
  listJobs(accountId: string, options?: { status?: Job["status"]; limit?: number }):
    Promise<{ account_id: string; jobs: Job[] }>;
  createGrant(accountId: string, body: {
    amount?: number; plan?: string; tier?: number | string; reason?: string; expires_at?: string;
    ref?: string; metadata?: Metadata;
  }, options?: CallOptions): Promise<{ grant: Grant; account: Account }>;
  createCharge(accountId: string, body: {
    amount?: number; price?: Price; reason?: string; ref?: string; metadata?: Metadata;
  }, options?: CallOptions): Promise<{ charge: Charge; account: Account }>;
  createHold(body: {
    account_id?: string; amount?: number; price?: Price; ref?: string; ttl_seconds?: number;
    metadata?: Metadata;
  }, options?: CallOptions): Promise<{ hold: Hold; account: Account }>;
  getHold(holdId: string): Promise<Hold>;
  captureHold(holdId: string, body?: { amount?: number }, options?: CallOptions):
    Promise<{ hold: Hold; account: Account }>;
  releaseHold(holdId: string, body?: { reason?: string }, options?: CallOptions):
    Promise<{ hold: Hold; account: Account }>;
  createRefund(body: {
    charge_id?: string; hold_id?: string; amount?: number; reason?: string; metadata?: Metadata;
  }, options?: CallOptions): Promise<{ refund: Refund; account: Account }>;
  createJob(body: {
    operation: string; account_id?: string; model?: string; params?: Record<string, unknown>;
    input?: Record<string, unknown>; provider?: string; provider_task_id?: string;
    ttl_seconds?: number; metadata?: Metadata;
  }, options?: CallOptions): Promise<{ job: Job; account: Account }>;
  getJob(jobId: string): Promise<Job>;
  reportJobResult(jobId: string, body: {
    status: "success" | "failed"; result_url?: string; error?: string;
  }): Promise<{ job: Job; changed: boolean; account: Account }>;
  quote(body: { operation: string; account_id?: string; model?: string;
                params?: Record<string, unknown> }): Promise<Quote>;
  getPricing(): Promise<{ operations: Array<Record<string, unknown>>; [k: string]: unknown }>;
  getPlans(): Promise<Record<string, unknown>>;
  batch(operations: BatchOperation[], options?: CallOptions):
    Promise<{ results: Array<{ status: number; body: Record<string, any> }> }>;
  createToken(accountId: string, options?: { ttlSeconds?: number }):
    Promise<{ token: string; account_id: string; expires_at: string }>;
  createWebhookEndpoint(body: { url: string; events: Array<"balance.updated" | "job.updated" | "credits.low"> },
                        options?: CallOptions): Promise<WebhookEndpoint & { secret: string }>;
  listWebhookEndpoints(): Promise<{ endpoints: WebhookEndpoint[] }>;
  deleteWebhookEndpoint(endpointId: string): Promise<WebhookEndpoint & { deleted: true }>;
  listWebhookDeliveries(endpointId: string, options?: { limit?: number }):
    Promise<{ endpoint: WebhookEndpoint; deliveries: Array<Record<string, unknown>> }>;
  enableWebhookEndpoint(endpointId: string): Promise<WebhookEndpoint>;
  testWebhookEndpoint(endpointId: string): Promise<WebhookTestOutcome>;
  resendWebhookEvents(endpointId: string, body: { account_id: string; from_seq: number }):
    Promise<{ account_id: string; from_seq: number; events: number }>;
}

export declare class CreditstreamError extends Error {
  constructor(status: number, code: string, message: string, body?: Record<string, any>);
  /** the HTTP status, or 0 when no answer came */
  readonly status: number;
  readonly code: string;
  /** the error object of the envelope, details included */
  readonly body: Record<string, any>;
  /** how many attempts the call made (set on errors a call throws) */
  attempts?: number;
}
export declare class ConnectionFailed extends CreditstreamError {}
export declare class BadRequest extends CreditstreamError {}
export declare class AuthenticationError extends CreditstreamError {}
export declare class InsufficientCredits extends CreditstreamError {
  readonly required: number; readonly available: number; readonly shortfall: number;
}
export declare class PermissionDenied extends CreditstreamError {}
export declare class NotFound extends CreditstreamError {}
export declare class Conflict extends CreditstreamError {}
export declare class InvalidState extends Conflict {}
export declare class RefundExceedsSpend extends Conflict { readonly refundable: number; }
export declare class RequestInProgress extends Conflict {}
export declare class ProviderTaskConflict extends Conflict {}
export declare class PayloadTooLarge extends CreditstreamError {}
export declare class ValidationError extends CreditstreamError { readonly errors: unknown[]; }
export declare class IdempotencyKeyReused extends ValidationError {}
export declare class RateLimited extends CreditstreamError { readonly retryAfter: number | null; }
export declare class DailyLimitExceeded extends RateLimited {}
export declare class FeatureLimitExceeded extends RateLimited {}
export declare class Unavailable extends CreditstreamError {}

export declare function errorFromResponse(status: number, payload: unknown): CreditstreamError;
export declare function verifyWebhook(
  secret: string, rawBody: Buffer | Uint8Array | string, signatureHeader: string | null | undefined,
  options?: { toleranceS?: number; now?: number },
): boolean;
