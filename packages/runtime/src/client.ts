/**
 * Calling agents: `client.call(agent, verb, request)` → reply, `client.stream(...)` → chunks.
 * Standard verbs (generate, score, health, info) are typed and validated on both ends; for
 * custom verbs pass the schemas in `opts` or get `unknown` back.
 */
import type { NatsConnection } from "@nats-io/nats-core"
import { Effect, Schema, Stream } from "effect"
import {
  AnyValue,
  StandardVerbs,
  verbSubject,
  type AgentInfo,
  type GenerateChunk,
  type GenerateRequest,
  type GenerateResponse,
  type Health,
  type MoaError,
  type ScoreRequest,
  type ScoreResponse,
} from "@moa/protocol"
import { Nats, requestPromise, requestStream, type NatsOptions } from "@moa/bus"

export interface CallOptions<Req = unknown, Res = unknown, C = unknown> {
  /** Reply deadline in ms (default 10 s; streams: 60 s for the whole stream). */
  readonly timeoutMs?: number
  /** Streams: fail when no chunk arrives for this long (default: timeoutMs). */
  readonly idleTimeoutMs?: number
  readonly request?: Schema.Schema<Req, any, never>
  readonly response?: Schema.Schema<Res, any, never>
  readonly chunk?: Schema.Schema<C, any, never>
}

interface StandardMap {
  generate: [GenerateRequest, GenerateResponse, GenerateChunk]
  score: [ScoreRequest, ScoreResponse, never]
  health: [Record<string, never>, Health, never]
  info: [Record<string, never>, AgentInfo, never]
}

export interface AgentClient {
  readonly cluster: string
  readonly nc: NatsConnection
  call<V extends keyof StandardMap>(agent: string, verb: V, req: StandardMap[V][0], opts?: CallOptions): Promise<StandardMap[V][1]>
  call<Res = unknown, Req = unknown>(agent: string, verb: string, req: Req, opts?: CallOptions<Req, Res>): Promise<Res>
  stream<V extends "generate">(agent: string, verb: V, req: StandardMap[V][0], opts?: CallOptions): AsyncIterable<StandardMap[V][2]>
  stream<C = unknown, Req = unknown>(agent: string, verb: string, req: Req, opts?: CallOptions<Req, unknown, C>): AsyncIterable<C>
  /** Effect form of `call` (fails with MoaError). */
  callEffect<V extends keyof StandardMap>(agent: string, verb: V, req: StandardMap[V][0], opts?: CallOptions): Effect.Effect<StandardMap[V][1], MoaError>
  callEffect<Res = unknown, Req = unknown>(agent: string, verb: string, req: Req, opts?: CallOptions<Req, Res>): Effect.Effect<Res, MoaError>
  /** Effect Stream form of `stream`. */
  streamEffect<C = unknown, Req = unknown>(agent: string, verb: string, req: Req, opts?: CallOptions<Req, unknown, C>): Stream.Stream<C, MoaError>
}

type AnyS = Schema.Schema<any, any, never>
interface VerbSchemas {
  readonly request: AnyS
  readonly response: AnyS
  readonly chunk: AnyS
}
const stdSchemas = new Map<string, VerbSchemas>()
const schemasFor = (verb: string, opts: CallOptions<any, any, any>): VerbSchemas => {
  if (opts.request === undefined && opts.response === undefined && opts.chunk === undefined) {
    // the common case (a standard or schema-less verb): one object per verb, not per call
    let s = stdSchemas.get(verb)
    if (s === undefined) {
      const std = (StandardVerbs as Record<string, { request: AnyS; response: AnyS; chunk?: AnyS }>)[verb]
      s = { request: std?.request ?? AnyValue, response: std?.response ?? AnyValue, chunk: std?.chunk ?? AnyValue }
      if (stdSchemas.size < 10_000) stdSchemas.set(verb, s)
    }
    return s
  }
  const std = (StandardVerbs as Record<string, { request: AnyS; response: AnyS; chunk?: AnyS }>)[verb]
  return {
    request: opts.request ?? std?.request ?? AnyValue,
    response: opts.response ?? std?.response ?? AnyValue,
    chunk: opts.chunk ?? std?.chunk ?? AnyValue,
  }
}

const noOptions: CallOptions = {}

/** A client for the agents of `cluster` over an open connection. */
export const makeClient = (nc: NatsConnection, cluster: string): AgentClient => {
  const natsService = { nc, options: { servers: nc.getServer() } as NatsOptions }
  // agent → verb → subject (no string built per call)
  const subjects = new Map<string, Map<string, string>>()
  let cached = 0
  const subjectOf = (agent: string, verb: string) => {
    let byVerb = subjects.get(agent)
    if (byVerb === undefined) {
      byVerb = new Map()
      if (cached < 10_000) subjects.set(agent, byVerb)
    }
    let s = byVerb.get(verb)
    if (s === undefined) {
      s = verbSubject(cluster, agent, verb)
      if (cached++ < 10_000) byVerb.set(verb, s)
    }
    return s
  }
  const streamEffect = (agent: string, verb: string, req: unknown, opts: CallOptions<any, any, any> = noOptions) => {
    const s = schemasFor(verb, opts)
    return requestStream(subjectOf(agent, verb), s.request, s.chunk, req, opts).pipe(Stream.provideService(Nats, natsService))
  }
  const client: AgentClient = {
    cluster,
    nc,
    call: ((agent: string, verb: string, req: unknown, opts: CallOptions<any, any, any> = noOptions) => {
      const s = schemasFor(verb, opts)
      return requestPromise(nc, subjectOf(agent, verb), s.request, s.response, req, opts)
    }) as AgentClient["call"],
    callEffect: ((agent: string, verb: string, req: unknown, opts: CallOptions<any, any, any> = {}) =>
      Effect.tryPromise({
        try: () => client.call(agent, verb, req, opts),
        catch: (e) => e as MoaError,
      })) as AgentClient["callEffect"],
    streamEffect: streamEffect as AgentClient["streamEffect"],
    stream: ((agent: string, verb: string, req: unknown, opts: CallOptions<any, any, any> = {}) =>
      streamToAsyncIterable(streamEffect(agent, verb, req, opts))) as AgentClient["stream"],
  }
  return client
}

/** An AsyncIterable over an Effect stream that throws the stream's own error (not a FiberFailure). */
const streamToAsyncIterable = <A>(s: Stream.Stream<A, MoaError>): AsyncIterable<A> =>
  Stream.toAsyncIterable(s.pipe(Stream.mapError((e) => e)))

/** Effect: a client for `cluster` over the `Nats` service. */
export const AgentClientFor = (cluster: string): Effect.Effect<AgentClient, never, Nats> => Effect.map(Nats, ({ nc }) => makeClient(nc, cluster))
