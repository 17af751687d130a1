/**
 * `defineAgent` and `defineCluster`: the TypeScript shape of a cluster file.
 *
 * ```ts
 * export default defineCluster({
 *   name: "demo",
 *   agents: [
 *     defineAgent({
 *       name: "echo", role: "expert", replicas: 2,
 *       setup: async (ctx) => { ctx.setBackend("rules"); return { greeting: "hi" } },
 *       handlers: {
 *         generate: (req, ctx) => ({ text: `${ctx.state.greeting} ${req.prompt}`, tokens: 1, finishReason: "stop" }),
 *         upper: verb({ request: Text, response: Text }, (req) => ({ text: req.text.toUpperCase() })),
 *       },
 *     }),
 *   ],
 * })
 * ```
 */
import type { NatsConnection } from "@nats-io/nats-core"
import type { Effect, Schema } from "effect"
import type { GenerateChunk, GenerateRequest, GenerateResponse, ScoreRequest, ScoreResponse, VerbSpec } from "@moa/protocol"
import type { Logger } from "pino"
import type { Role } from "./roles.ts"
import type { AgentClient } from "./client.ts"

/** What a handler may return: a value, a Promise, an Effect, or (streaming verbs) an AsyncIterable of chunks. */
export type HandlerResult<A, C = never> =
  | A
  | Promise<A>
  | Effect.Effect<A, unknown, never>
  | AsyncIterable<C>
  | Promise<AsyncIterable<C>>

/** Passed to `setup` once when the agent starts. */
export interface SetupContext {
  readonly cluster: string
  readonly agent: string
  readonly role: Role
  /** 0-based replica index of this process, and the replica count. */
  readonly replica: number
  readonly replicas: number
  readonly log: Logger
  readonly nc: NatsConnection
  /** Call other agents of the cluster. */
  readonly client: AgentClient
  /** Report the compute backend (shown in service metadata, `moa status`); default "none". */
  readonly setBackend: (backend: string) => void
  /** Add a key to the NATS service metadata (e.g. model, adapter version). */
  readonly setMetadata: (key: string, value: string) => void
  /** Extra CLI/env configuration passed to this agent (`MOA_AGENT_CONFIG` JSON), if any. */
  readonly config: Record<string, unknown>
}

/** Passed to every handler call. */
export interface HandlerContext<S> extends Omit<SetupContext, "setBackend" | "setMetadata"> {
  /** What `setup` returned. */
  readonly state: S
  /** The verb being served. */
  readonly verb: string
  /** Epoch ms after which nobody waits for this answer. */
  readonly deadline: number
  /** Aborted when the deadline passes or the agent shuts down hard. */
  readonly signal: AbortSignal
  /** Per-request logger (child of the agent's). */
  readonly log: Logger
  /** Publish an event on `moa.<cluster>.events.<kind>`. */
  readonly emit: (kind: string, data?: unknown) => void
}

export type Handler<Req, Res, S, C = never> = (req: Req, ctx: HandlerContext<S>) => HandlerResult<Res, C>

/** A handler with its own request/response (and optional chunk) schemas — for custom verbs. */
export interface VerbHandler<Req, Res, S, C = never> {
  readonly _tag: "VerbHandler"
  readonly spec: VerbSpec<Req, Res, C>
  readonly handle: Handler<Req, Res, S, C>
}

/**
 * Declare a custom verb with schemas: the request is validated before `handle` runs, the
 * reply is encoded through `response` (and chunks through `chunk`, for streams).
 */
export const verb = <Req, ReqI, Res, ResI, S = any, C = never, CI = never>(
  spec: {
    readonly request: Schema.Schema<Req, ReqI, never>
    readonly response: Schema.Schema<Res, ResI, never>
    readonly chunk?: Schema.Schema<C, CI, never>
    readonly isStream?: (req: Req) => boolean
    readonly collect?: (chunks: ReadonlyArray<C>) => Res
    readonly toChunk?: (res: Res) => C
    readonly description?: string
  },
  handle: Handler<Req, Res, S, C>,
): VerbHandler<Req, Res, S, C> => ({ _tag: "VerbHandler", spec: { name: "", ...spec }, handle })

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyHandler<S> = Handler<any, any, S, any> | VerbHandler<any, any, S, any>

/**
 * Handlers by verb. `generate` and `score` have known schemas (from @moa/protocol); any other
 * verb is either a `verb(...)` with schemas or a plain function taking/returning any
 * msgpack-able value.
 */
export interface AgentHandlers<S> {
  generate?: Handler<GenerateRequest, GenerateResponse, S, GenerateChunk> | VerbHandler<any, any, S, any>
  score?: Handler<ScoreRequest, ScoreResponse, S> | VerbHandler<any, any, S, any>
  [verb: string]: AnyHandler<S> | undefined
}

export interface AgentDefinition<S = any> {
  readonly _tag: "AgentDefinition"
  /** Letters, digits, `_`, `-`; unique in the cluster. Used in subjects and as the NATS service name. */
  readonly name: string
  readonly role: Role
  /** Processes to run (default 1); replicas share a NATS queue group. */
  readonly replicas: number
  /** Requests served at once per process (default 32); more wait in a bounded queue. */
  readonly concurrency: number
  /** Requests allowed to wait when all slots are busy (default 8 × concurrency); beyond: OVERLOADED. */
  readonly maxQueue: number
  /** Largest request body accepted, in bytes (default 1 MiB); beyond: PAYLOAD_TOO_LARGE. */
  readonly maxPayload: number
  /** Reported in $SRV.INFO (default "0.1.0"). */
  readonly version: string
  readonly description: string
  readonly handlers: AgentHandlers<S>
  readonly setup?: (ctx: SetupContext) => S | Promise<S> | Effect.Effect<S, unknown, never>
  /** Runs after the agent stopped serving (drained), before it disconnects. */
  readonly teardown?: (state: S, ctx: SetupContext) => void | Promise<void> | Effect.Effect<void, unknown, never>
  /** Extra service metadata. */
  readonly metadata: Record<string, string>
  /** Extra environment variables for this agent's processes. */
  readonly env: Record<string, string>
  /** Free-form configuration handed to setup as `ctx.config`. */
  readonly config: Record<string, unknown>
}

export interface AgentOptions<S> {
  readonly name: string
  readonly role: Role
  readonly replicas?: number
  readonly concurrency?: number
  readonly maxQueue?: number
  readonly maxPayload?: number
  readonly version?: string
  readonly description?: string
  readonly handlers: AgentHandlers<S>
  readonly setup?: (ctx: SetupContext) => S | Promise<S> | Effect.Effect<S, unknown, never>
  readonly teardown?: (state: S, ctx: SetupContext) => void | Promise<void> | Effect.Effect<void, unknown, never>
  readonly metadata?: Record<string, string>
  readonly env?: Record<string, string>
  readonly config?: Record<string, unknown>
}

export const DEFAULT_CONCURRENCY = 32
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024

/** Define an agent. Validation happens when the cluster is loaded (so errors name the file). */
export const defineAgent = <S = undefined>(opts: AgentOptions<S>): AgentDefinition<S> => {
  const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY
  return {
    _tag: "AgentDefinition",
    name: opts.name,
    role: opts.role,
    replicas: opts.replicas ?? 1,
    concurrency,
    maxQueue: opts.maxQueue ?? concurrency * 8,
    maxPayload: opts.maxPayload ?? DEFAULT_MAX_PAYLOAD,
    version: opts.version ?? "0.1.0",
    description: opts.description ?? "",
    handlers: opts.handlers,
    setup: opts.setup,
    teardown: opts.teardown,
    metadata: opts.metadata ?? {},
    env: opts.env ?? {},
    config: opts.config ?? {},
  }
}

export interface RestartPolicy {
  /** First restart delay (ms, default 250); doubles per crash up to `maxBackoffMs`. */
  readonly backoffMs: number
  readonly maxBackoffMs: number
  /** Give up after this many crashes within `windowMs` (default 5 in 60 s). */
  readonly maxCrashes: number
  readonly windowMs: number
}

export const defaultRestartPolicy: RestartPolicy = { backoffMs: 250, maxBackoffMs: 5000, maxCrashes: 5, windowMs: 60_000 }

export interface ClusterDefinition {
  readonly _tag: "ClusterDefinition"
  readonly name: string
  /** NATS URL(s) to use when neither --nats nor MOA_NATS_URL is given (default: embedded server). */
  readonly nats?: string | ReadonlyArray<string>
  readonly agents: ReadonlyArray<AgentDefinition<any>>
  readonly restart: RestartPolicy
}

export interface ClusterOptions {
  readonly name: string
  readonly nats?: string | ReadonlyArray<string>
  readonly agents: ReadonlyArray<AgentDefinition<any>>
  readonly restart?: Partial<RestartPolicy>
}

export const defineCluster = (opts: ClusterOptions): ClusterDefinition => ({
  _tag: "ClusterDefinition",
  name: opts.name,
  nats: opts.nats,
  agents: opts.agents,
  restart: { ...defaultRestartPolicy, ...opts.restart },
})
