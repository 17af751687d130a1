/**
 * A verb = a request schema, a reply schema and, for streaming verbs, a chunk schema.
 * The standard verbs live here; agents may declare their own with `defineVerb`.
 */
import { Schema } from "effect"
import { AgentInfo, Empty, GenerateChunk, GenerateRequest, GenerateResponse, Health, ScoreRequest, ScoreResponse } from "./messages.ts"

export interface VerbSpec<Req = any, Res = any, Chunk = any> {
  readonly name: string
  readonly request: Schema.Schema<Req, any, never>
  readonly response: Schema.Schema<Res, any, never>
  /** Present when the verb can answer with a stream. */
  readonly chunk?: Schema.Schema<Chunk, any, never>
  /** Whether a request asks for a streamed reply (default: never). */
  readonly isStream?: (req: Req) => boolean
  readonly description?: string
}

export const defineVerb = <Req, ReqI, Res, ResI, Chunk = never, ChunkI = never>(spec: {
  readonly name: string
  readonly request: Schema.Schema<Req, ReqI, never>
  readonly response: Schema.Schema<Res, ResI, never>
  readonly chunk?: Schema.Schema<Chunk, ChunkI, never>
  readonly isStream?: (req: Req) => boolean
  readonly description?: string
}): VerbSpec<Req, Res, Chunk> => spec

export const GenerateVerb = defineVerb({
  name: "generate",
  request: GenerateRequest,
  response: GenerateResponse,
  chunk: GenerateChunk,
  isStream: (r) => r.stream === true,
  description: "continue a prompt (optionally streamed)",
})

export const ScoreVerb = defineVerb({
  name: "score",
  request: ScoreRequest,
  response: ScoreResponse,
  description: "log-probabilities of completions given a prompt",
})

export const HealthVerb = defineVerb({ name: "health", request: Empty, response: Health, description: "liveness and load" })
export const InfoVerb = defineVerb({ name: "info", request: Empty, response: AgentInfo, description: "who this agent is" })

/** Verbs whose schemas are known by name, so handlers for them need no schema. */
export const StandardVerbs = {
  generate: GenerateVerb,
  score: ScoreVerb,
  health: HealthVerb,
  info: InfoVerb,
} as const
export type StandardVerbName = keyof typeof StandardVerbs

/** Verbs every agent answers by itself (the runtime implements them). */
export const BuiltinVerbs = ["health", "info"] as const
