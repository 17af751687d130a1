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
  // Method syntax on purpose: bivariant parameters, so any VerbSpec<X, Y, Z> is a VerbSpec<any, any, any>.
  /** Whether a request asks for a streamed reply (default: never). */
  isStream?(req: Req): boolean
  /** Fold chunks into one reply (lets a streaming handler answer a non-streaming request). */
  collect?(chunks: ReadonlyArray<Chunk>): Res
  /** Turn one reply into a chunk (lets a plain handler answer a streaming request). */
  toChunk?(res: Res): Chunk
  readonly description?: string
}

export const defineVerb = <Req, ReqI, Res, ResI, Chunk = never, ChunkI = never>(spec: {
  readonly name: string
  readonly request: Schema.Schema<Req, ReqI, never>
  readonly response: Schema.Schema<Res, ResI, never>
  readonly chunk?: Schema.Schema<Chunk, ChunkI, never>
  readonly isStream?: (req: Req) => boolean
  readonly collect?: (chunks: ReadonlyArray<Chunk>) => Res
  readonly toChunk?: (res: Res) => Chunk
  readonly description?: string
}): VerbSpec<Req, Res, Chunk> => spec

export const GenerateVerb = defineVerb({
  name: "generate",
  request: GenerateRequest,
  response: GenerateResponse,
  chunk: GenerateChunk,
  isStream: (r) => r.stream === true,
  collect: (chunks) => {
    const last = chunks[chunks.length - 1]
    const logprobs = chunks.flatMap((c) => (c.logprob === undefined ? [] : [c.logprob]))
    return {
      text: chunks.map((c) => c.text).join(""),
      tokens: last?.tokens ?? chunks.filter((c) => c.text.length > 0).length,
      finishReason: last?.finishReason ?? "stop",
      ...(logprobs.length > 0 ? { logprobs } : {}),
    }
  },
  toChunk: (res) => ({ index: 0, text: res.text, done: true, finishReason: res.finishReason, tokens: res.tokens }),
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
