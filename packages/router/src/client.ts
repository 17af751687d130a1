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
  /** Polls in a row that found no replica (a busy machine misses some; see HealthPolicy). */
  readonly missedPolls?: number
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

/**
 * Sliding record of recent call outcomes for the error rate: the last `size` calls, and of those
 * only the ones younger than `maxAgeMs`. The age bound matters: the gate scales an expert's share
 * by (1 − error rate), so an expert whose last `size` calls all failed gets no share, hence no
 * calls, hence no new outcome — without the age bound it would stay at error rate 1 for ever
 * (e.g. an expert restarted after a crash that failed its first calls on a loaded machine).
 */
export class CallOutcomes {
  private readonly xs: Array<{ ok: boolean; at: number }> = []
  constructor(
    private readonly size = 20,
    private readonly maxAgeMs = 30_000,
    private readonly now: () => number = Date.now,
  ) {}
  push(ok: boolean) {
    this.xs.push({ ok, at: this.now() })
    if (this.xs.length > this.size) this.xs.shift()
  }
  private recent() {
    const since = this.now() - this.maxAgeMs
    while (this.xs.length > 0 && this.xs[0]!.at < since) this.xs.shift()
    return this.xs
  }
  errorRate(): number {
    const xs = this.recent()
    return xs.length === 0 ? 0 : xs.filter((x) => !x.ok).length / xs.length
  }
  trailingFailures(): number {
    const xs = this.recent()
    let n = 0
    for (let i = xs.length - 1; i >= 0 && !xs[i]!.ok; i--) n++
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
  /** Whether any poll so far found a replica of this expert. */
  readonly seen: boolean
}

/**
 * When a missed `$SRV.STATS` reply means "down". A machine busy generating or training answers
 * stats late or not at all for a while, so one short window is no proof of death. An expert
 * that has been seen is marked down only when
 *   - `missesToDown` polls in a row found no replica of it, and
 *   - its last sign of life (a poll that found it, or a call it answered) is `graceMs` old, and
 *   - no call of ours to it is still in flight (a busy expert is working for us; the call's own
 *     deadline decides whether that work failed).
 * An expert never seen alive is down after `missesToDown` polls found nobody (its first poll may
 * have started before it was ready); immediately down: an expert whose only replicas say they
 * are draining. The monitor also widens its reply window after a miss.
 */
export interface HealthPolicy {
  readonly missesToDown: number
  readonly graceMs: number
  /** Call outcomes older than this no longer count in the error rate (see CallOutcomes). */
  readonly errorWindowMs: number
}
export const defaultHealthPolicy: HealthPolicy = { missesToDown: 3, graceMs: 5000, errorWindowMs: 30_000 }

const checkPolicy = (p: HealthPolicy): HealthPolicy => {
  if (!(Number.isInteger(p.missesToDown) && p.missesToDown >= 1)) throw new Error(`health.missesToDown must be an integer ≥ 1, got ${p.missesToDown}`)
  if (!(Number.isFinite(p.graceMs) && p.graceMs >= 0)) throw new Error(`health.graceMs must be a number of milliseconds ≥ 0, got ${p.graceMs}`)
  if (!(Number.isFinite(p.errorWindowMs) && p.errorWindowMs > 0)) throw new Error(`health.errorWindowMs must be a number of milliseconds > 0, got ${p.errorWindowMs}`)
  return p
}

/** An ExpertClient over NATS through the runtime's agent client: `generate` on `moa.<cluster>.<expert>.generate`. */
export const natsExpert = (
  nc: NatsConnection,
  cluster: string,
  name: string,
  opts: { client?: AgentClient; health?: Partial<HealthPolicy> } = {},
): NatsExpertClient => {
  const subject = verbSubject(cluster, name, "generate")
  const client = opts.client ?? makeClient(nc, cluster)
  const policy = checkPolicy({ ...defaultHealthPolicy, ...opts.health })
  let inflight = 0
  let lastFailureAt = 0
  let lastOkAt = 0
  const outcomes = new CallOutcomes(20, policy.errorWindowMs)
  let polls = 0
  /** The last poll that found a replica (its queue depth, capacity, served counts). */
  let good: ExpertPoll | undefined
  let lastSeenAt = 0
  let misses = 0
  let drained = false
  const pollDown = (): boolean => {
    if (polls === 0 || misses === 0) return false
    if (drained) return true
    // never seen alive: down after `missesToDown` empty polls — not at the first, which may have
    // started before the expert was ready (agents of a cluster start together; seen in the demo,
    // where one early poll sent every question of a piped session to the one expert it had found)
    if (!good) return misses >= policy.missesToDown
    if (inflight > 0) return false
    return misses >= policy.missesToDown && Date.now() - Math.max(lastSeenAt, lastOkAt) >= policy.graceMs
  }
  return {
    name,
    subject,
    get seen() {
      return good !== undefined
    },
    observe(poll) {
      const wasDown = pollDown()
      polls++
      if (poll.replicas > 0) {
        // a poll that finds the expert after it was down: it is back, forget old failures
        if (wasDown || !good) outcomes.reset()
        good = poll
        lastSeenAt = Date.now()
        misses = 0
        drained = false
      } else {
        misses++
        drained = (poll.draining ?? 0) > 0
      }
    },
    stats() {
      // 3 failures in a row mark it down for 5 s; then it gets a chance again (half-open)
      const failing = outcomes.trailingFailures() >= 3 && Date.now() - lastFailureAt < 5000
      return {
        name,
        healthy: !pollDown() && !failing,
        // the queue the expert reports (all callers) when it does, else what this router has in flight
        inflight: Math.max(inflight, good?.queueDepth ?? 0),
        capacity: good?.concurrency || undefined,
        errorRate: outcomes.errorRate(),
        replicas: polls === 0 ? undefined : misses > 0 ? 0 : good?.replicas,
        missedPolls: misses,
        served: good && { requests: good.requests, errors: good.errors, avgProcessingMs: good.avgProcessingMs },
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
        lastOkAt = Date.now()
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
 * marked down (by the client's HealthPolicy), so the gate gives it nothing until it comes back.
 *
 * The reply window adapts: it starts at `minWindowMs` (500 ms); when an expert that was seen
 * before is missing from a poll, the next poll waits twice as long (up to `maxWindowMs`, 4 s),
 * and after a poll that found everyone it shrinks by a quarter back towards the minimum. So a
 * loaded machine gets the time it needs and an idle one stays quick.
 */
export class ClusterMonitor {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private window: number
  private readonly minWindowMs: number
  private readonly maxWindowMs: number
  constructor(
    private readonly nc: NatsConnection,
    private readonly cluster: string,
    private readonly clients: () => ReadonlyArray<ExpertClient>,
    private readonly intervalMs = 1000,
    opts: { minWindowMs?: number; maxWindowMs?: number } = {},
  ) {
    this.minWindowMs = opts.minWindowMs ?? 500
    this.maxWindowMs = opts.maxWindowMs ?? 4000
    if (!(this.minWindowMs > 0 && this.maxWindowMs >= this.minWindowMs))
      throw new Error(`ClusterMonitor: need 0 < minWindowMs ≤ maxWindowMs, got ${this.minWindowMs} and ${this.maxWindowMs}`)
    this.window = this.minWindowMs
  }

  /** How long the next poll waits for `$SRV.STATS` replies. */
  get windowMs(): number {
    return this.window
  }

  /** One poll now; resolves when the replies are in (after the current window, or `waitMs` if given). */
  async poll(waitMs?: number): Promise<void> {
    const byAgent = new Map<string, { replicas: number; requests: number; errors: number; totalMs: number; queueDepth: number; concurrency: number; draining: number; reported: boolean }>()
    for (const s of await pollServices(this.nc, this.cluster, waitMs ?? this.window)) {
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
    let missedKnown = false
    for (const c of this.clients()) {
      const nc = c as Partial<NatsExpertClient>
      if (typeof nc.observe !== "function") continue
      const a = byAgent.get(c.name)
      if (!a && nc.seen) missedKnown = true
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
    this.window = missedKnown ? Math.min(this.maxWindowMs, this.window * 2) : Math.max(this.minWindowMs, Math.round(this.window * 0.75))
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
