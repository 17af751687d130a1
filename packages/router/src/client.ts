// Asking an expert. The router only needs this small interface; `natsExpert` implements it
// over NATS request/reply to `moa.<cluster>.<expert>.generate` (the runtime's agents), and
// `ClusterMonitor` feeds each client's stats from `$SRV.STATS` so the gate sees load and health.
import type { NatsConnection } from "@nats-io/nats-core"
import { discoverPromise, type DiscoveredService } from "@moa/bus"
import { verbSubject, type GenerateRequest, type MoaError } from "@moa/protocol"
import { makeClient, type AgentClient } from "@moa/runtime"
import { Packr } from "msgpackr"

export interface ExpertRequest {
  readonly prompt: string
  readonly maxTokens?: number
  /** 0 = greedy. */
  readonly temperature?: number
  readonly seed?: number
  readonly stop?: ReadonlyArray<string>
}

export interface ExpertResult {
  readonly text: string
  readonly tokens: number
  /** Wall time of the call as the router saw it. */
  readonly latencyMs: number
}

export interface ExpertStats {
  readonly name: string
  /** false when no replica answered the last `$SRV.STATS` poll or the last calls kept failing. */
  readonly healthy: boolean
  /** Calls this router has in flight to the expert (its queue depth as we see it). */
  readonly inflight: number
  /** Share of failed calls among the recent ones (0..1). */
  readonly errorRate: number
  /** Requests the expert serves at once over all replicas (from its stats), if known. */
  readonly capacity?: number
  /** Replicas seen in the last poll (undefined = never polled). */
  readonly replicas?: number
  /** Requests and errors the expert itself reports (sum over replicas), from `$SRV.STATS`. */
  readonly served?: { readonly requests: number; readonly errors: number; readonly avgProcessingMs: number }
}

export interface ExpertClient {
  readonly name: string
  generate(req: ExpertRequest, opts: { deadlineMs: number }): Promise<ExpertResult>
  stats(): ExpertStats
}

/** Why an expert gave no answer: it did not answer within its deadline, nobody serves it, or it replied with an error. */
export class ExpertFailure extends Error {
  readonly _tag = "ExpertFailure"
  constructor(
    readonly expert: string,
    readonly reason: "timeout" | "no-responders" | "error",
    message: string,
  ) {
    super(message)
  }
}

// The protocol's wire format: msgpack (plain maps) in an envelope { v: 1, d: payload }.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: true })
/** Drop `undefined` fields (msgpack has no "absent"; other languages would see nil). */
const defined = (u: unknown): unknown => {
  if (Array.isArray(u)) return u.map(defined)
  if (u !== null && typeof u === "object" && !ArrayBuffer.isView(u)) {
    const o: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(u)) if (v !== undefined) o[k] = defined(v)
    return o
  }
  return u
}
export const packEnvelope = (d: unknown): Uint8Array => packr.pack({ v: 1, d: defined(d) })
export const unpackEnvelope = (bytes: Uint8Array): unknown => {
  const raw = packr.unpack(bytes) as any
  return raw !== null && typeof raw === "object" && "v" in raw && "d" in raw ? raw.d : raw
}

/** Sliding record of recent outcomes for the error rate. */
class Outcomes {
  private readonly xs: boolean[] = []
  constructor(private readonly size = 20) {}
  push(ok: boolean) {
    this.xs.push(ok)
    if (this.xs.length > this.size) this.xs.shift()
  }
  errorRate(): number {
    return this.xs.length === 0 ? 0 : this.xs.filter((x) => !x).length / this.xs.length
  }
  trailingFailures(): number {
    let n = 0
    for (let i = this.xs.length - 1; i >= 0 && !this.xs[i]; i--) n++
    return n
  }
  reset() {
    this.xs.length = 0
  }
}

export interface NatsExpertClient extends ExpertClient {
  readonly subject: string
  /** Called by ClusterMonitor with what `$SRV.STATS` says about this expert. */
  observe(poll: ExpertPoll): void
}

/** An ExpertClient over NATS through the runtime's agent client: `generate` on `moa.<cluster>.<expert>.generate`. */
export const natsExpert = (nc: NatsConnection, cluster: string, name: string, opts: { client?: AgentClient } = {}): NatsExpertClient => {
  const subject = verbSubject(cluster, name, "generate")
  const client = opts.client ?? makeClient(nc, cluster)
  let inflight = 0
  let lastFailureAt = 0
  let missed = 0
  const outcomes = new Outcomes()
  let polled: ExpertPoll | undefined
  return {
    name,
    subject,
    observe(poll) {
      // one missed $SRV.STATS reply (a busy machine) is not death: an expert that was up is
      // marked down only when two polls in a row find no replica
      if (poll.replicas === 0 && polled && polled.replicas > 0 && missed === 0) {
        missed++
        return
      }
      missed = 0
      // a fresh poll that finds replicas means the expert is back: forget old failures
      if (poll.replicas > 0 && (!polled || polled.replicas === 0)) outcomes.reset()
      polled = poll
    },
    stats() {
      // 3 failures in a row mark it down for 5 s; then it gets a chance again (half-open)
      const failing = outcomes.trailingFailures() >= 3 && Date.now() - lastFailureAt < 5000
      const healthy = (polled === undefined || polled.replicas > 0) && !failing
      return {
        name,
        healthy,
        // the queue the expert reports (all callers) when it does, else what this router has in flight
        inflight: Math.max(inflight, polled?.queueDepth ?? 0),
        capacity: polled?.concurrency || undefined,
        errorRate: outcomes.errorRate(),
        replicas: polled?.replicas,
        served: polled && { requests: polled.requests, errors: polled.errors, avgProcessingMs: polled.avgProcessingMs },
      }
    },
    async generate(req, { deadlineMs }) {
      const t0 = performance.now()
      inflight++
      try {
        const r = await client.call(
          name,
          "generate",
          defined({ prompt: req.prompt, maxTokens: req.maxTokens, temperature: req.temperature, seed: req.seed, stop: req.stop ? [...req.stop] : undefined }) as GenerateRequest,
          { timeoutMs: Math.max(1, Math.round(deadlineMs)) },
        )
        outcomes.push(true)
        return { text: r.text, tokens: r.tokens, latencyMs: performance.now() - t0 }
      } catch (e) {
        outcomes.push(false)
        lastFailureAt = Date.now()
        const m = e as MoaError
        const text = String(m?.message ?? e)
        if (m?.code === "TIMEOUT") throw new ExpertFailure(name, "timeout", `${name} did not answer within ${deadlineMs} ms (${text})`)
        if (m?.code === "UNAVAILABLE" && /no responders/i.test(text)) throw new ExpertFailure(name, "no-responders", `no replica of ${name} is serving ${subject}`)
        throw new ExpertFailure(name, "error", `${name}: ${m?.code ? `${m.code}: ` : ""}${text}`)
      } finally {
        inflight--
      }
    },
  }
}

/** What one poll found about an expert, summed over its replicas. */
export interface ExpertPoll {
  readonly replicas: number
  readonly requests: number
  readonly errors: number
  readonly avgProcessingMs: number
  /** Requests being served plus waiting in the agents' queues (runtime agents report it). */
  readonly queueDepth?: number
  /** Requests the replicas serve at once (sum of their concurrency). */
  readonly concurrency?: number
  /** Replicas that say they are draining (they get no new work). */
  readonly draining?: number
}

/** Service instances of the cluster from `$SRV.INFO`/`$SRV.STATS`, with the agent each serves. Never throws (no services = []). */
export const pollServices = async (nc: NatsConnection, cluster: string, waitMs = 500): Promise<Array<{ agent: string; role?: string; verbs: string[]; service: DiscoveredService }>> => {
  let found: DiscoveredService[]
  try {
    found = await discoverPromise(nc, { waitMs })
  } catch {
    return []
  }
  const out: Array<{ agent: string; role?: string; verbs: string[]; service: DiscoveredService }> = []
  for (const svc of found) {
    const eps: ReadonlyArray<{ subject: string; metadata?: Record<string, string> }> = svc.info?.endpoints ?? svc.stats?.endpoints ?? []
    for (const ep of eps) {
      const parts = ep.subject.split(".")
      if (parts.length !== 4 || parts[0] !== "moa" || parts[1] !== cluster) continue
      // runtime agents serve one endpoint `moa.<cluster>.<agent>.*` listing their verbs; plain services one per verb
      const verbs = parts[3] === "*" ? (ep.metadata?.verbs ?? "").split(",").filter(Boolean) : [parts[3]]
      out.push({ agent: parts[2], role: svc.metadata.role, verbs, service: svc })
    }
  }
  return out
}

/**
 * Polls `$SRV.STATS` every `intervalMs` and tells each NATS expert client how many replicas
 * serve it, how deep their queues are and how often they fail; an expert with no replica is
 * marked down, so the gate gives it nothing until it comes back.
 */
export class ClusterMonitor {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  constructor(
    private readonly nc: NatsConnection,
    private readonly cluster: string,
    private readonly clients: () => ReadonlyArray<ExpertClient>,
    private readonly intervalMs = 1000,
  ) {}

  /** One poll now; resolves when the replies are in (~waitMs). */
  async poll(waitMs = 500): Promise<void> {
    const byAgent = new Map<string, { replicas: number; requests: number; errors: number; totalMs: number; queueDepth: number; concurrency: number; draining: number; reported: boolean }>()
    for (const s of await pollServices(this.nc, this.cluster, waitMs)) {
      if (!s.verbs.includes("generate")) continue
      const a = byAgent.get(s.agent) ?? { replicas: 0, requests: 0, errors: 0, totalMs: 0, queueDepth: 0, concurrency: 0, draining: 0, reported: false }
      a.replicas++
      for (const ep of s.service.stats?.endpoints ?? []) {
        const data = ep.data as { inFlight?: number; queued?: number; concurrency?: number; status?: string; verbs?: Record<string, { requests: number; errors: number; avgMs: number }> } | undefined
        const gen = data?.verbs?.generate
        if (gen) {
          a.requests += gen.requests
          a.errors += gen.errors
          a.totalMs += gen.avgMs * gen.requests
        } else {
          a.requests += ep.num_requests
          a.errors += ep.num_errors
          a.totalMs += Number(ep.processing_time) / 1e6
        }
        if (typeof data?.inFlight === "number") {
          a.reported = true
          a.queueDepth += data.inFlight + (data.queued ?? 0)
          a.concurrency += data.concurrency ?? 0
          if (data.status === "draining") a.draining++
        }
      }
      byAgent.set(s.agent, a)
    }
    for (const c of this.clients()) {
      const nc = c as Partial<NatsExpertClient>
      if (typeof nc.observe !== "function") continue
      const a = byAgent.get(c.name)
      nc.observe({
        replicas: a ? a.replicas - a.draining : 0,
        requests: a?.requests ?? 0,
        errors: a?.errors ?? 0,
        avgProcessingMs: a && a.requests > 0 ? a.totalMs / a.requests : 0,
        queueDepth: a?.reported ? a.queueDepth : undefined,
        concurrency: a?.reported ? a.concurrency : undefined,
        draining: a?.draining,
      })
    }
  }

  start(): this {
    const tick = () => {
      this.running = this.poll().finally(() => {
        if (this.timer !== undefined) this.timer = setTimeout(tick, this.intervalMs)
      })
    }
    this.timer = setTimeout(tick, 0)
    return this
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    await this.running
  }
}
