// Asking an expert. The router only needs this small interface; `natsExpert` implements it
// over NATS request/reply to `moa.<cluster>.<expert>.generate` (the runtime's agents), and
// `ClusterMonitor` feeds each client's stats from `$SRV.STATS` so the gate sees load and health.
import type { NatsConnection } from "@nats-io/nats-core"
import { ServiceError, Svcm } from "@nats-io/services"
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
  observe(poll: { replicas: number; requests: number; errors: number; avgProcessingMs: number }): void
}

/** An ExpertClient over NATS: request/reply to `moa.<cluster>.<expert>.generate`. */
export const natsExpert = (nc: NatsConnection, cluster: string, name: string, opts: { verb?: string; subject?: string } = {}): NatsExpertClient => {
  const subject = opts.subject ?? `moa.${cluster}.${name}.${opts.verb ?? "generate"}`
  let inflight = 0
  const outcomes = new Outcomes()
  let polled: { replicas: number; requests: number; errors: number; avgProcessingMs: number } | undefined
  return {
    name,
    subject,
    observe(poll) {
      // a fresh poll that finds replicas means the expert is back: forget old failures
      if (poll.replicas > 0 && (!polled || polled.replicas === 0)) outcomes.reset()
      polled = poll
    },
    stats() {
      const healthy = (polled === undefined || polled.replicas > 0) && outcomes.trailingFailures() < 3
      return {
        name,
        healthy,
        inflight,
        errorRate: outcomes.errorRate(),
        replicas: polled?.replicas,
        served: polled && { requests: polled.requests, errors: polled.errors, avgProcessingMs: polled.avgProcessingMs },
      }
    },
    async generate(req, { deadlineMs }) {
      const t0 = performance.now()
      inflight++
      try {
        const payload: Record<string, unknown> = { prompt: req.prompt }
        if (req.maxTokens !== undefined) payload.maxTokens = req.maxTokens
        if (req.temperature !== undefined) payload.temperature = req.temperature
        if (req.seed !== undefined) payload.seed = req.seed
        if (req.stop !== undefined) payload.stop = [...req.stop]
        let msg
        try {
          msg = await nc.request(subject, packEnvelope(payload), { timeout: Math.max(1, Math.round(deadlineMs)) })
        } catch (e: any) {
          const text = String(e?.message ?? e)
          const noResp = e?.name === "NoRespondersError" || /no responders|503/i.test(text)
          throw new ExpertFailure(
            name,
            noResp ? "no-responders" : /timeout/i.test(text) || e?.name === "TimeoutError" ? "timeout" : "error",
            noResp ? `no replica of ${name} is serving ${subject}` : /timeout/i.test(text) ? `${name} did not answer within ${deadlineMs} ms` : `${name}: ${text}`,
          )
        }
        const se = ServiceError.toServiceError(msg)
        if (se) throw new ExpertFailure(name, "error", `${name} replied with error ${se.code}: ${se.message}`)
        let d: any
        try {
          d = unpackEnvelope(msg.data)
        } catch (e) {
          throw new ExpertFailure(name, "error", `${name} sent a reply that is not msgpack: ${String(e)}`)
        }
        if (d === null || typeof d !== "object" || typeof d.text !== "string")
          throw new ExpertFailure(name, "error", `${name} sent a reply without a "text" string; expected a GenerateResponse { text, tokens }`)
        outcomes.push(true)
        return { text: d.text, tokens: typeof d.tokens === "number" ? d.tokens : 0, latencyMs: performance.now() - t0 }
      } catch (e) {
        outcomes.push(false)
        throw e
      } finally {
        inflight--
      }
    },
  }
}

/**
 * Polls `$SRV.STATS` every `intervalMs` and tells each NATS expert client how many replicas
 * serve its subject and what they report; an expert with no replica is marked down, so the gate
 * gives it nothing until it comes back.
 */
export class ClusterMonitor {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  constructor(
    private readonly nc: NatsConnection,
    private readonly clients: () => ReadonlyArray<ExpertClient>,
    private readonly intervalMs = 1000,
  ) {}

  /** One poll now; resolves when the replies are in (at most ~maxWaitMs). */
  async poll(maxWaitMs = 500): Promise<void> {
    const bySubject = new Map<string, { replicas: number; requests: number; errors: number; totalNs: number }>()
    try {
      const it = await new Svcm(this.nc).client({ strategy: "stall", stall: 100, maxWait: maxWaitMs }).stats()
      for await (const s of it) {
        for (const ep of s.endpoints ?? []) {
          const agg = bySubject.get(ep.subject) ?? { replicas: 0, requests: 0, errors: 0, totalNs: 0 }
          agg.replicas++
          agg.requests += ep.num_requests
          agg.errors += ep.num_errors
          agg.totalNs += Number(ep.processing_time)
          bySubject.set(ep.subject, agg)
        }
      }
    } catch {
      return // the connection is closing; keep the last view
    }
    for (const c of this.clients()) {
      const nc = c as Partial<NatsExpertClient>
      if (typeof nc.observe !== "function" || typeof nc.subject !== "string") continue
      const a = bySubject.get(nc.subject)
      nc.observe({
        replicas: a?.replicas ?? 0,
        requests: a?.requests ?? 0,
        errors: a?.errors ?? 0,
        avgProcessingMs: a && a.requests > 0 ? a.totalNs / a.requests / 1e6 : 0,
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
