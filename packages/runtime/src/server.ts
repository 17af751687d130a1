/**
 * The serving core of an agent process: one NATS service (name = agent) with one endpoint
 * `moa.<cluster>.<agent>.*` that dispatches on the verb, validates each request at the
 * boundary, runs handlers under a bounded in-flight limit (plus a bounded wait queue) and
 * answers with a reply, a stream of chunks or a typed error.
 *
 * The hot path is plain TypeScript (no fiber per request) so the runtime adds little to a
 * bare NATS round trip; Effect-returning handlers run on the agent's Effect runtime.
 */
import { hostname } from "node:os"
import { performance } from "node:perf_hooks"
import type { NatsConnection } from "@nats-io/nats-core"
import type { Service, ServiceMsg } from "@nats-io/services"
import { Svcm } from "@nats-io/services"
import { Cause, Effect, Either, Exit, Runtime } from "effect"
import {
  AgentEvent,
  AnyValue,
  BuiltinVerbs,
  checkValue,
  encodeEither,
  encodeSync,
  eventSubject,
  HealthVerb,
  InfoVerb,
  moaError,
  MoaError,
  packTrusted,
  PROTOCOL_VERSION,
  StandardVerbs,
  toMoaError,
  unpackEnvelope,
  type AgentInfo,
  type Health,
  type VerbSpec,
} from "@moa/protocol"
import { respondError, streamReplier } from "@moa/bus"
import type { Logger } from "pino"
import type { AgentDefinition, AnyHandler, Handler, HandlerContext, SetupContext } from "./define.ts"
import { LatencyWindow, type AgentStatsData } from "./stats.ts"

interface ResolvedVerb {
  readonly name: string
  readonly spec: VerbSpec<any, any, any>
  readonly handle: Handler<any, any, any, any>
  readonly stats: LatencyWindow
  /**
   * Standard verbs: every moa client decodes the reply through the same schema, so the
   * server only packs it (one schema check per hop). Custom verbs: only the server knows the
   * schema, so it validates what the handler returned.
   */
  readonly trustReply: boolean
  /** Prefix of a BAD_REQUEST message for this verb (built once). */
  readonly badRequest: string
}

const GenericSpec = (name: string): VerbSpec<unknown, unknown, unknown> => ({ name, request: AnyValue, response: AnyValue, chunk: AnyValue })

const resolveVerb = (name: string, h: AnyHandler<any>): ResolvedVerb => {
  if (typeof h === "function") {
    const std = (StandardVerbs as unknown as Record<string, VerbSpec>)[name]
    return { name, spec: std ?? GenericSpec(name), handle: h, stats: new LatencyWindow(), trustReply: std !== undefined, badRequest: `bad "${name}" request` }
  }
  return { name, spec: { ...h.spec, name }, handle: h.handle, stats: new LatencyWindow(), trustReply: false, badRequest: `bad "${name}" request` }
}

const isAsyncIterable = (u: unknown): u is AsyncIterable<unknown> =>
  u != null && typeof (u as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function"
const isPromiseLike = (u: unknown): u is PromiseLike<unknown> => u != null && typeof (u as PromiseLike<unknown>).then === "function"

export interface ServerConfig {
  readonly def: AgentDefinition<any>
  readonly cluster: string
  readonly replica: number
  readonly replicas: number
  readonly nc: NatsConnection
  readonly state: unknown
  readonly log: Logger
  readonly setupContext: Omit<SetupContext, "setBackend" | "setMetadata">
  readonly backend: string
  readonly metadata: Record<string, string>
  /** Runs Effect-returning handlers (default: the default Effect runtime). */
  readonly runtime?: Runtime.Runtime<never>
}

export interface AgentServer {
  readonly service: Service
  readonly id: string
  /** Stop taking requests, finish those in flight (up to `timeoutMs`), then resolve. */
  readonly drain: (timeoutMs?: number) => Promise<void>
  readonly stats: () => AgentStatsData
  readonly health: () => Health
  readonly info: () => AgentInfo
  readonly emit: (kind: string, data?: unknown) => void
}

/** Register the agent as a NATS service and start serving. */
export const startAgentServer = async (cfg: ServerConfig): Promise<AgentServer> => {
  const { def, cluster, nc, log } = cfg
  const rt = cfg.runtime ?? Runtime.defaultRuntime
  const runExit = Runtime.runPromiseExit(rt)
  const group = `moa.${cluster}.${def.name}`
  const prefixLen = group.length + 1
  const startedAt = new Date()
  const verbs = new Map<string, ResolvedVerb>()
  for (const [name, h] of Object.entries(def.handlers)) if (h) verbs.set(name, resolveVerb(name, h))
  const total = new LatencyWindow()
  const verbList = () => [...verbs.keys()].sort().join(", ")

  let inFlight = 0
  let draining = false
  const queue: Array<() => void> = []
  const controllers = new Set<AbortController>()
  let idleWaiters: Array<() => void> = []

  const emit = (kind: string, data?: unknown) => {
    try {
      nc.publish(
        eventSubject(cluster, kind),
        encodeSync(AgentEvent, { kind, cluster, agent: def.name, id: service?.info().id, at: new Date().toISOString(), data }),
      )
    } catch (e) {
      log.debug({ err: e }, "could not publish event")
    }
  }

  const baseCtx = cfg.setupContext
  // Per-request context: a small class whose prototype carries the per-agent fields, so
  // each request allocates only what differs (verb, deadline, lazily an AbortController).
  class RequestCtx {
    private ac: AbortController | undefined
    private timer: NodeJS.Timeout | undefined
    constructor(
      readonly verb: string,
      readonly deadline: number,
    ) {}
    get signal(): AbortSignal {
      if (!this.ac) {
        const ac = new AbortController()
        this.ac = ac
        controllers.add(ac)
        const verbName = this.verb
        this.timer = setTimeout(() => ac.abort(moaError("TIMEOUT", `deadline passed while serving ${verbName}`)), Math.max(0, this.deadline - Date.now()))
        this.timer.unref()
      }
      return this.ac.signal
    }
    done() {
      if (this.timer) clearTimeout(this.timer)
      if (this.ac) controllers.delete(this.ac)
    }
  }
  Object.assign(RequestCtx.prototype, { ...baseCtx, state: cfg.state, emit })
  const makeCtx = (verbName: string, deadline: number) => new RequestCtx(verbName, deadline) as unknown as HandlerContext<any> & { done: () => void }

  const finish = (v: ResolvedVerb | undefined, t0: number, failed: boolean) => {
    const ms = performance.now() - t0
    total.record(ms, failed)
    v?.stats.record(ms, failed)
  }

  const fail = (reply: string, err: MoaError, v: ResolvedVerb | undefined, t0: number) => {
    respondError(nc, reply, err)
    finish(v, t0, true)
  }

  const runEffect = async (eff: Effect.Effect<unknown, unknown, never>, deadline: number): Promise<unknown> => {
    const ms = Math.max(1, deadline - Date.now())
    const exit = await runExit(Effect.timeoutFail(eff, { duration: ms, onTimeout: () => moaError("TIMEOUT", `handler exceeded the caller's deadline (${ms} ms)`) }))
    if (Exit.isSuccess(exit)) return exit.value
    throw Cause.squash(exit.cause)
  }

  const sendStream = async (v: ResolvedVerb, reply: string, it: AsyncIterable<unknown>, deadline: number) => {
    const out = streamReplier(nc, reply)
    const chunkSchema = v.spec.chunk ?? AnyValue
    for await (const chunk of it) {
      if (Date.now() > deadline) throw moaError("TIMEOUT", `stream for ${v.name} passed the caller's deadline`)
      const bytes = encodeEither(chunkSchema, chunk)
      if (Either.isLeft(bytes)) throw moaError("INTERNAL", `handler for "${v.name}" yielded an invalid chunk: ${bytes.left.message}`)
      out.chunk(bytes.right)
    }
    out.end()
  }

  /** Start serving one request; plain synchronous answers never leave this call stack. */
  const run = (v: ResolvedVerb, req: unknown, reply: string, deadline: number, wantsStream: boolean, t0: number) => {
    inFlight++
    const ctx = makeCtx(v.name, deadline)
    let out: unknown
    try {
      out = v.handle(req, ctx)
      if (!wantsStream && !isPromiseLike(out) && !Effect.isEffect(out) && !isAsyncIterable(out)) {
        respond(v, reply, out)
        return settle(v, ctx, t0, undefined)
      }
    } catch (e) {
      return settle(v, ctx, t0, e, reply)
    }
    void runAsync(v, out, reply, deadline, wantsStream).then(
      () => settle(v, ctx, t0, undefined),
      (e) => settle(v, ctx, t0, e, reply),
    )
  }

  const settle = (v: ResolvedVerb, ctx: { done: () => void }, t0: number, error: unknown, reply?: string) => {
    if (error !== undefined) {
      const err = toMoaError(error)
      if (err.code === "INTERNAL") log.error({ verb: v.name, err: error instanceof Error ? { message: error.message, stack: error.stack } : error }, "handler failed")
      if (reply) respondError(nc, reply, err)
    }
    ctx.done()
    inFlight--
    finish(v, t0, error !== undefined)
    next()
  }

  const runAsync = async (v: ResolvedVerb, first: unknown, reply: string, deadline: number, wantsStream: boolean) => {
    let out = first
    if (isPromiseLike(out)) out = await out
    if (Effect.isEffect(out)) out = await runEffect(out as Effect.Effect<unknown, unknown, never>, deadline)
    if (isAsyncIterable(out)) {
      if (wantsStream) await sendStream(v, reply, out, deadline)
      else if (v.spec.collect) {
        const chunks: Array<unknown> = []
        for await (const c of out) chunks.push(c)
        respond(v, reply, v.spec.collect(chunks))
      } else throw moaError("INTERNAL", `handler for "${v.name}" returned a stream but the request is not a streaming one`)
    } else if (wantsStream) {
      const s = streamReplier(nc, reply)
      const chunk = v.spec.toChunk ? v.spec.toChunk(out) : out
      const bytes = encodeEither(v.spec.chunk ?? AnyValue, chunk)
      if (Either.isLeft(bytes)) throw moaError("INTERNAL", `handler for "${v.name}" returned an invalid reply: ${bytes.left.message}`)
      s.chunk(bytes.right)
      s.end()
    } else respond(v, reply, out)
  }

  const respond = (v: ResolvedVerb, reply: string, value: unknown) => {
    let bytes: Uint8Array
    try {
      bytes = v.trustReply ? packTrusted(v.spec.response, value) : Either.getOrThrowWith(encodeEither(v.spec.response, value), (e) => e)
    } catch (e) {
      const err = toMoaError(e)
      throw moaError("INTERNAL", `handler for "${v.name}" returned an invalid reply — ${err.message}`, { field: err.field })
    }
    if (reply) nc.publish(reply, bytes)
  }

  const next = () => {
    while (inFlight < def.concurrency && queue.length > 0) queue.shift()!()
    if (inFlight === 0 && queue.length === 0 && idleWaiters.length > 0) {
      const ws = idleWaiters
      idleWaiters = []
      for (const w of ws) w()
    }
  }

  const onMessage = (err: Error | null, msg: ServiceMsg) => {
    if (err) {
      log.error({ err }, "service subscription failed")
      return
    }
    const t0 = performance.now()
    const reply = msg.reply ?? ""
    const verbName = msg.subject.slice(prefixLen)
    const v = verbs.get(verbName)
    if (!v) {
      return fail(reply, moaError("UNKNOWN_VERB", `agent "${def.name}" has no verb "${verbName}"; it answers: ${verbList()}`, { field: "verb" }), undefined, t0)
    }
    const data = msg.data
    if (data.length > def.maxPayload) {
      return fail(
        reply,
        moaError("PAYLOAD_TOO_LARGE", `request of ${data.length} bytes exceeds agent "${def.name}"'s limit of ${def.maxPayload} bytes (maxPayload)`),
        v,
        t0,
      )
    }
    let req: unknown
    let dl: number | undefined
    try {
      const env = unpackEnvelope(data)
      dl = env.dl
      req = checkValue(v.spec.request, env.d, v.badRequest)
    } catch (e) {
      return fail(reply, toMoaError(e), v, t0)
    }
    const deadline = dl ?? Date.now() + 60_000
    const wantsStream = v.spec.chunk !== undefined && v.spec.isStream !== undefined && v.spec.isStream(req)
    if (inFlight < def.concurrency) {
      run(v, req, reply, deadline, wantsStream, t0)
    } else if (queue.length < def.maxQueue) {
      queue.push(() => {
        if (Date.now() > deadline) fail(reply, moaError("TIMEOUT", `request waited past its deadline in ${def.name}'s queue`), v, t0)
        else run(v, req, reply, deadline, wantsStream, t0)
      })
    } else {
      fail(
        reply,
        moaError("OVERLOADED", `agent "${def.name}" is at its limit (${def.concurrency} in flight, ${def.maxQueue} queued); retry later or add replicas`),
        v,
        t0,
      )
    }
  }

  const metadata: Record<string, string> = {
    ...def.metadata,
    ...cfg.metadata,
    cluster,
    agent: def.name,
    role: def.role,
    version: def.version,
    backend: cfg.backend,
    replica: String(cfg.replica),
    replicas: String(cfg.replicas),
    concurrency: String(def.concurrency),
    protocol: String(PROTOCOL_VERSION),
    pid: String(process.pid),
    host: hostname(),
  }

  const statsData = (): AgentStatsData => {
    const byVerb: Record<string, ReturnType<LatencyWindow["snapshot"]>> = {}
    for (const [k, v] of verbs) if (v.stats.requests > 0) byVerb[k] = v.stats.snapshot()
    return {
      ...total.snapshot(),
      inFlight,
      queued: queue.length,
      concurrency: def.concurrency,
      status: draining ? "draining" : inFlight >= def.concurrency ? "degraded" : "ok",
      backend: cfg.backend,
      replica: cfg.replica,
      verbs: byVerb,
    }
  }

  const health = (): Health => {
    const s = statsData()
    return {
      status: s.status,
      agent: def.name,
      id: service.info().id,
      uptimeMs: Date.now() - startedAt.getTime(),
      inFlight: s.inFlight,
      concurrency: def.concurrency,
      requests: s.requests,
      errors: s.errors,
      backend: cfg.backend,
    }
  }

  const info = (): AgentInfo => ({
    cluster,
    agent: def.name,
    role: def.role,
    version: def.version,
    backend: cfg.backend,
    id: service.info().id,
    replica: cfg.replica,
    replicas: cfg.replicas,
    pid: process.pid,
    host: hostname(),
    startedAt: startedAt.toISOString(),
    verbs: [...verbs.keys()].sort(),
    concurrency: def.concurrency,
    maxPayload: def.maxPayload,
    protocol: PROTOCOL_VERSION,
    metadata,
  })

  verbs.set("health", { name: "health", spec: HealthVerb as unknown as VerbSpec, handle: () => health(), stats: new LatencyWindow(), trustReply: true, badRequest: `bad "health" request` })
  verbs.set("info", { name: "info", spec: InfoVerb as unknown as VerbSpec, handle: () => info(), stats: new LatencyWindow(), trustReply: true, badRequest: `bad "info" request` })
  void BuiltinVerbs

  const service: Service = await new Svcm(nc).add({
    name: def.name,
    version: def.version,
    description: def.description || `${def.role} agent ${def.name} of cluster ${cluster}`,
    metadata,
    queue: "q",
    statsHandler: async () => statsData(),
  })
  service.addEndpoint("rpc", {
    subject: `${group}.*`,
    handler: onMessage,
    metadata: { verbs: [...verbs.keys()].sort().join(",") },
  })
  await nc.flush()

  const drain = async (timeoutMs = 10_000) => {
    if (draining) return
    draining = true
    emit("agent-draining", { inFlight, queued: queue.length })
    await service.stop().catch(() => null)
    if (inFlight > 0 || queue.length > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        new Promise<void>((r) => idleWaiters.push(r)),
        new Promise<void>((r) => (timer = setTimeout(r, timeoutMs))),
      ])
      clearTimeout(timer)
      if (inFlight > 0) {
        log.warn({ inFlight, queued: queue.length }, `drain timed out after ${timeoutMs} ms; aborting what is left`)
        for (const ac of controllers) ac.abort(moaError("UNAVAILABLE", "agent is shutting down"))
      }
    }
  }

  return { service, id: service.info().id, drain, stats: statsData, health, info, emit }
}

export { MoaError }
