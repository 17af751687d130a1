// Wire schemas of the router: what a client sends to `moa.<cluster>.router.route` and the
// answer + trace it gets back. Kept in the router package (the protocol package owns the
// messages every agent understands; these are the router's own).
import { Schema } from "effect"

const NonNegInt = Schema.Int.pipe(Schema.nonNegative())
const PosInt = Schema.Int.pipe(Schema.positive())
// probabilities are plain numbers (a renormalised 1.0000000002 must not fail the encoding)
const Prob = Schema.Number
const Ms = Schema.Number.pipe(Schema.nonNegative())

export const RouteMode = Schema.Literal("single", "moe", "moa", "self-moa")
export type RouteMode = typeof RouteMode.Type

/** How candidates become one answer: a weighted vote, the best by a scorer, or an aggregator expert. */
export const AggregatorSpec = Schema.Union(
  Schema.Struct({ kind: Schema.Literal("vote") }),
  /** `scorer` names a scorer registered with the router ("reward" = the skills checker) or `judge:<expert>`. */
  Schema.Struct({ kind: Schema.Literal("best-of-n"), scorer: Schema.String }),
  Schema.Struct({ kind: Schema.Literal("model"), expert: Schema.String }),
)
export type AggregatorSpec = typeof AggregatorSpec.Type

export const RouteRequest = Schema.Struct({
  /** The user's question. */
  prompt: Schema.String.pipe(Schema.minLength(1)),
  /** Default: the router's configured mode. */
  mode: Schema.optional(RouteMode),
  /** single: the expert to ask; self-moa: the expert to sample (default: the gate's top-1). */
  expert: Schema.optional(Schema.String),
  /** moe / moa proposers: how many experts the gate picks (default: the gate's k). */
  k: Schema.optional(PosInt.pipe(Schema.lessThanOrEqualTo(64))),
  /** moa: proposers listed explicitly instead of chosen by the gate. */
  proposers: Schema.optional(Schema.Array(Schema.String).pipe(Schema.minItems(1), Schema.maxItems(64))),
  /** moa: number of proposer layers (default 1; layer i > 1 sees layer i-1's answers). */
  layers: Schema.optional(PosInt.pipe(Schema.lessThanOrEqualTo(8))),
  /** self-moa: number of samples (default 5). */
  samples: Schema.optional(PosInt.pipe(Schema.lessThanOrEqualTo(64))),
  /** self-moa sampling temperature (default 0.8; must be > 0). */
  temperature: Schema.optional(Schema.Number.pipe(Schema.greaterThan(0), Schema.lessThanOrEqualTo(10))),
  aggregator: Schema.optional(AggregatorSpec),
  /** Per-expert deadline in ms (default: the router's). */
  deadlineMs: Schema.optional(PosInt.pipe(Schema.lessThanOrEqualTo(600_000))),
  maxTokens: Schema.optional(PosInt.pipe(Schema.lessThanOrEqualTo(65_536))),
  seed: Schema.optional(Schema.Int),
})
export type RouteRequest = typeof RouteRequest.Type

export const GateTrace = Schema.Struct({
  version: Schema.String,
  probs: Schema.Record({ key: Schema.String, value: Prob }),
  adjusted: Schema.Record({ key: Schema.String, value: Prob }),
  chosen: Schema.Array(Schema.String),
  weights: Schema.Array(Prob),
  confidence: Prob,
  rule: Schema.Literal("top-k", "fallback", "widened"),
})
export type GateTrace = typeof GateTrace.Type

export const CandidateTrace = Schema.Struct({
  expert: Schema.String,
  /** self-moa: which sample of the expert. */
  sample: Schema.optional(NonNegInt),
  ok: Schema.Boolean,
  text: Schema.optional(Schema.String),
  weight: Schema.optional(Schema.Number),
  /** Why the candidate was dropped: timeout, no-responders or error. */
  dropped: Schema.optional(Schema.Literal("timeout", "no-responders", "error")),
  error: Schema.optional(Schema.String),
  latencyMs: Ms,
  tokens: NonNegInt,
})
export type CandidateTrace = typeof CandidateTrace.Type

export const LayerTrace = Schema.Struct({
  index: NonNegInt,
  /** The prompt the layer's experts got (the question itself in layer 0). */
  prompt: Schema.String,
  candidates: Schema.Array(CandidateTrace),
  latencyMs: Ms,
})
export type LayerTrace = typeof LayerTrace.Type

export const AggregatorTrace = Schema.Struct({
  kind: Schema.Literal("vote", "best-of-n", "model", "single"),
  answer: Schema.String,
  tally: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Number })),
  scores: Schema.optional(Schema.Array(Schema.Number)),
  expert: Schema.optional(Schema.String),
  /** When the aggregator expert failed and the router fell back to a vote. */
  fallback: Schema.optional(Schema.String),
  latencyMs: Ms,
})
export type AggregatorTrace = typeof AggregatorTrace.Type

export const RouteTrace = Schema.Struct({
  mode: RouteMode,
  gate: Schema.optional(GateTrace),
  layers: Schema.Array(LayerTrace),
  aggregator: AggregatorTrace,
  totalLatencyMs: Ms,
})
export type RouteTrace = typeof RouteTrace.Type

export const RouteResponse = Schema.Struct({
  answer: Schema.String,
  trace: RouteTrace,
})
export type RouteResponse = typeof RouteResponse.Type

/** Typed router errors (also sent as NATS service errors by the router agent). */
export class NoExpertAnswered extends Schema.TaggedError<NoExpertAnswered>()("NoExpertAnswered", {
  message: Schema.String,
  layer: NonNegInt,
  failures: Schema.Array(Schema.Struct({ expert: Schema.String, reason: Schema.String, error: Schema.String })),
}) {}

export class RouteRequestInvalid extends Schema.TaggedError<RouteRequestInvalid>()("RouteRequestInvalid", {
  message: Schema.String,
}) {}

export type RouteError = NoExpertAnswered | RouteRequestInvalid
