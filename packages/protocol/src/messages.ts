/**
 * Schemas of the messages every agent understands. Each request/response pair has
 * `Encoded === Type` (no transformations), so what a client builds is what goes on the wire.
 * Other packages add their own messages (train jobs, rounds, …) in their own files and use
 * the generic codec (`encode(schema, value)`, `decode(schema, bytes)`).
 */
import { Schema } from "effect"
import { ErrorCode } from "./errors.ts"

const NonNegInt = Schema.Int.pipe(Schema.nonNegative())
const PosInt = Schema.Int.pipe(Schema.positive())

// ---------------------------------------------------------------------------------------------
// generate

export const FinishReason = Schema.Literal("stop", "length", "error", "cancelled")
export type FinishReason = typeof FinishReason.Type

export const GenerateRequest = Schema.Struct({
  /** The text to continue. */
  prompt: Schema.String,
  /** Upper bound on generated tokens (default 64). */
  maxTokens: Schema.optional(PosInt.pipe(Schema.lessThanOrEqualTo(65_536))),
  /** 0 = greedy (default 1). */
  temperature: Schema.optional(Schema.Number.pipe(Schema.between(0, 10))),
  /** Keep only the k most likely tokens (0 or absent = off). */
  topK: Schema.optional(NonNegInt),
  /** Nucleus sampling mass in (0, 1] (absent = off). */
  topP: Schema.optional(Schema.Number.pipe(Schema.greaterThan(0), Schema.lessThanOrEqualTo(1))),
  /** Stop as soon as the generated text ends with one of these. */
  stop: Schema.optional(Schema.Array(Schema.String).pipe(Schema.maxItems(16))),
  /** Reply with a stream of `GenerateChunk`s instead of one `GenerateResponse`. */
  stream: Schema.optional(Schema.Boolean),
  /** Name of the adapter (LoRA, …) to apply; absent = the base/promoted model. */
  adapter: Schema.optional(Schema.String),
  /** Seed for reproducible sampling. */
  seed: Schema.optional(Schema.Int),
  /** Also return the log-probability of each generated token. */
  logprobs: Schema.optional(Schema.Boolean),
})
export type GenerateRequest = typeof GenerateRequest.Type

export const generateDefaults = { maxTokens: 64, temperature: 1, topK: 0, topP: 1, stop: [] as ReadonlyArray<string>, stream: false, logprobs: false } as const

/** A generate request with every sampling parameter filled in from `generateDefaults`. */
export const resolveGenerate = (req: GenerateRequest) => ({
  ...req,
  maxTokens: req.maxTokens ?? generateDefaults.maxTokens,
  temperature: req.temperature ?? generateDefaults.temperature,
  topK: req.topK ?? generateDefaults.topK,
  topP: req.topP ?? generateDefaults.topP,
  stop: req.stop ?? generateDefaults.stop,
  stream: req.stream ?? generateDefaults.stream,
  logprobs: req.logprobs ?? generateDefaults.logprobs,
})

export const Usage = Schema.Struct({ promptTokens: NonNegInt, completionTokens: NonNegInt })

export const GenerateResponse = Schema.Struct({
  text: Schema.String,
  /** Number of generated tokens. */
  tokens: NonNegInt,
  finishReason: FinishReason,
  /** Per generated token, when `logprobs` was asked for. */
  logprobs: Schema.optional(Schema.Array(Schema.Number)),
  usage: Schema.optional(Usage),
  /** Which model/adapter answered (for traces). */
  model: Schema.optional(Schema.String),
  adapter: Schema.optional(Schema.String),
})
export type GenerateResponse = typeof GenerateResponse.Type

/** One piece of a streamed generation; the last chunk has `done: true` and a `finishReason`. */
export const GenerateChunk = Schema.Struct({
  index: NonNegInt,
  text: Schema.String,
  done: Schema.optional(Schema.Boolean),
  finishReason: Schema.optional(FinishReason),
  tokens: Schema.optional(NonNegInt),
  logprob: Schema.optional(Schema.Number),
})
export type GenerateChunk = typeof GenerateChunk.Type

// ---------------------------------------------------------------------------------------------
// score: log-probabilities of completions given a prompt (for rewards, DPO reference models, judges)

export const ScoreRequest = Schema.Struct({
  prompt: Schema.String,
  completions: Schema.Array(Schema.String).pipe(Schema.minItems(1), Schema.maxItems(256)),
  adapter: Schema.optional(Schema.String),
  /** Also return the per-token log-probs of each completion. */
  perToken: Schema.optional(Schema.Boolean),
})
export type ScoreRequest = typeof ScoreRequest.Type

export const ScoreResponse = Schema.Struct({
  /** Sum of token log-probs of each completion, same order as the request. */
  logprobs: Schema.Array(Schema.Number),
  /** Token count of each completion. */
  tokens: Schema.Array(NonNegInt),
  perToken: Schema.optional(Schema.Array(Schema.Array(Schema.Number))),
  model: Schema.optional(Schema.String),
  adapter: Schema.optional(Schema.String),
})
export type ScoreResponse = typeof ScoreResponse.Type

// ---------------------------------------------------------------------------------------------
// agent info and health (built-in verbs every agent answers)

export const Empty = Schema.Struct({})
export type Empty = typeof Empty.Type

export const AgentInfo = Schema.Struct({
  cluster: Schema.String,
  agent: Schema.String,
  role: Schema.String,
  version: Schema.String,
  backend: Schema.String,
  /** Instance id (the NATS service id of this replica). */
  id: Schema.String,
  replica: NonNegInt,
  replicas: PosInt,
  pid: Schema.Int,
  host: Schema.String,
  startedAt: Schema.String,
  verbs: Schema.Array(Schema.String),
  concurrency: PosInt,
  maxPayload: PosInt,
  protocol: Schema.Int,
  metadata: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
})
export type AgentInfo = typeof AgentInfo.Type

export const HealthStatus = Schema.Literal("ok", "degraded", "draining")
export type HealthStatus = typeof HealthStatus.Type

export const Health = Schema.Struct({
  status: HealthStatus,
  agent: Schema.String,
  id: Schema.String,
  uptimeMs: NonNegInt,
  inFlight: NonNegInt,
  concurrency: PosInt,
  requests: NonNegInt,
  errors: NonNegInt,
  backend: Schema.String,
  detail: Schema.optional(Schema.String),
})
export type Health = typeof Health.Type

// ---------------------------------------------------------------------------------------------
// events on moa.<cluster>.events.<kind>

export const AgentEvent = Schema.Struct({
  kind: Schema.String,
  cluster: Schema.String,
  agent: Schema.optional(Schema.String),
  id: Schema.optional(Schema.String),
  at: Schema.String,
  data: Schema.optional(Schema.Unknown),
})
export type AgentEvent = typeof AgentEvent.Type

// ---------------------------------------------------------------------------------------------
// the error body of a failed reply (the encoded form of MoaError)

export const ErrorReply = Schema.Struct({
  _tag: Schema.Literal("MoaError"),
  code: ErrorCode,
  message: Schema.String,
  field: Schema.optional(Schema.String),
  details: Schema.optional(Schema.Unknown),
})
export type ErrorReply = typeof ErrorReply.Type

/** A free-form value (for custom verbs that do not declare a schema). */
export const AnyValue = Schema.Unknown
