/** Per-verb request counters and a latency window for average and p99. */

const WINDOW = 2048

export class LatencyWindow {
  private readonly buf = new Float64Array(WINDOW)
  private n = 0
  requests = 0
  errors = 0
  totalMs = 0

  record(ms: number, failed: boolean): void {
    this.buf[this.n % WINDOW] = ms
    this.n++
    this.requests++
    this.totalMs += ms
    if (failed) this.errors++
  }

  /** Percentile (0..1) over the last WINDOW requests, in ms. */
  percentile(p: number): number {
    const count = Math.min(this.n, WINDOW)
    if (count === 0) return 0
    const xs = Array.from(this.buf.subarray(0, count)).sort((a, b) => a - b)
    return xs[Math.min(count - 1, Math.floor(p * count))]
  }

  snapshot(): VerbStats {
    return {
      requests: this.requests,
      errors: this.errors,
      avgMs: this.requests ? round(this.totalMs / this.requests) : 0,
      p50Ms: round(this.percentile(0.5)),
      p99Ms: round(this.percentile(0.99)),
    }
  }
}

const round = (x: number) => Math.round(x * 1000) / 1000

export interface VerbStats {
  readonly requests: number
  readonly errors: number
  readonly avgMs: number
  readonly p50Ms: number
  readonly p99Ms: number
}

/** What the agent puts in the `data` field of its `$SRV.STATS` endpoint answer. */
export interface AgentStatsData extends VerbStats {
  readonly inFlight: number
  readonly queued: number
  readonly concurrency: number
  readonly status: "ok" | "degraded" | "draining"
  readonly backend: string
  readonly replica: number
  readonly verbs: Record<string, VerbStats>
}
