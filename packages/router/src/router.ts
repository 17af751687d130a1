// The router: gate → ask experts in parallel (in layers) → aggregate, with a trace.
//
// The MoA core is `askLayer` + the loop in `moa`: ask the proposers in parallel, put their
// answers into the next prompt, repeat, then aggregate (togethercomputer/MoA's moa.py).
// Gating (moe), self-MoA and the aggregators plug in beside it.
import { Effect } from "effect"
import {
  aggregateWithModel,
  bestOfN,
  formatAggregatorPrompt,
  judgeScorer,
  normalizeAnswer,
  weightedVote,
  type Candidate,
  type Scorer,
} from "./aggregate.ts"
import { ExpertFailure, type ExpertClient, type ExpertRequest } from "./client.ts"
import type { FeatureExtractor } from "./features.ts"
import { GateUnavailable, type ExpertLoad, type Gate, type GateDecision } from "./gate.ts"
import {
  NoExpertAnswered,
  RouteRequestInvalid,
  type AggregatorSpec,
  type AggregatorTrace,
  type CandidateTrace,
  type GateTrace,
  type LayerTrace,
  type RouteMode,
  type RouteRequest,
  type RouteResponse,
} from "./schema.ts"

/** A gate ready to use: its network, how it reads prompts, and the version it was stored under. */
export interface GateBundle {
  readonly gate: Gate
  readonly features: FeatureExtractor
  readonly version: string
}

export interface RouterOptions {
  readonly experts: ReadonlyArray<ExpertClient>
  readonly gate?: GateBundle
  /** The cluster's default mode (default "moe" when a gate is loaded, else "single"). */
  readonly mode?: RouteMode
  /** Per-expert deadline (default 10 s). */
  readonly deadlineMs?: number
  readonly maxTokens?: number
  /** Default aggregator for moa and self-moa (default: vote). */
  readonly aggregator?: AggregatorSpec
  /** Named scorers for best-of-n ("reward" is a good name for the skills checker). */
  readonly scorers?: Record<string, Scorer>
  /** In-flight calls at which an expert's gate share halves (default 4). */
  readonly queueCapacity?: number
  /** Default expert for `single` when the request names none and there is no gate. */
  readonly defaultExpert?: string
  /**
   * Make a client for an expert the router has not discovered yet (a request names it). The
   * router agent passes one over NATS, so a freshly started expert is usable before the next
   * discovery round; without it, unknown names are a RouteRequestInvalid.
   */
  readonly resolveExpert?: (name: string) => ExpertClient | undefined
}

interface Ask {
  readonly client: ExpertClient
  readonly weight: number
  readonly sample?: number
  readonly temperature?: number
  readonly seed?: number
}

interface LayerResult {
  readonly trace: LayerTrace
  readonly answers: ReadonlyArray<Candidate>
}

export class Router {
  private readonly clients = new Map<string, ExpertClient>()
  private bundle: GateBundle | undefined
  readonly deadlineMs: number

  constructor(private readonly opts: RouterOptions) {
    for (const c of opts.experts) {
      if (this.clients.has(c.name)) throw new Error(`two expert clients are named "${c.name}"; expert names must be unique`)
      this.clients.set(c.name, c)
    }
    this.bundle = opts.gate
    this.deadlineMs = opts.deadlineMs ?? 10_000
  }

  /** The cluster's default mode: as configured, else moe once a gate is loaded, else single. */
  get defaultMode(): RouteMode {
    return this.opts.mode ?? (this.bundle ? "moe" : "single")
  }

  get experts(): ReadonlyArray<string> {
    return [...this.clients.keys()]
  }

  get gate(): GateBundle | undefined {
    return this.bundle
  }

  /** Add experts that joined the cluster (discovery refresh); known names are kept as they are. */
  addExperts(clients: ReadonlyArray<ExpertClient>): string[] {
    const added: string[] = []
    for (const c of clients) {
      if (this.clients.has(c.name)) continue
      this.clients.set(c.name, c)
      added.push(c.name)
    }
    return added
  }

  /** The expert clients (for the stats monitor). */
  get clientList(): ReadonlyArray<ExpertClient> {
    return [...this.clients.values()]
  }

  /** Swap in a new gate (hot reload); requests in flight finish with the one they started with. */
  setGate(bundle: GateBundle): void {
    const old = this.bundle
    this.bundle = bundle
    if (old && old.gate !== bundle.gate) setTimeout(() => old.gate.dispose(), 60_000).unref()
  }

  /** What the router knows about each expert's load, for the gate's capacity weighting. */
  load(): Record<string, ExpertLoad> {
    const out: Record<string, ExpertLoad> = {}
    for (const name of this.bundle?.gate.experts ?? []) {
      const c = this.clients.get(name)
      out[name] = c ? c.stats() : { healthy: false, inflight: 0, errorRate: 1 }
    }
    return out
  }

  /** The gate's decision for one prompt (throws when no gate is loaded). */
  async decide(prompt: string, k?: number): Promise<{ decision: GateDecision; version: string }> {
    const b = this.bundle
    if (!b) throw new RouteRequestInvalid({ message: "this router has no gate yet: train one with `moa router train`, or ask in mode single with an expert" })
    const [x] = await b.features.extract([prompt])
    const [p] = b.gate.probs([x])
    const kk = Math.min(k ?? b.gate.config.k, b.gate.experts.length)
    try {
      return { decision: b.gate.decide(p, { k: kk, load: this.load(), queueCapacity: this.opts.queueCapacity }), version: b.version }
    } catch (e) {
      if (!(e instanceof GateUnavailable)) throw e
      throw new NoExpertAnswered({ message: e.message, layer: 0, failures: b.gate.experts.map((expert) => ({ expert, reason: "down", error: "no replica answered the last $SRV.STATS poll" })) })
    }
  }

  private client(name: string): ExpertClient {
    let c = this.clients.get(name)
    if (!c && this.opts.resolveExpert) {
      c = this.opts.resolveExpert(name)
      if (c) this.clients.set(name, c)
    }
    if (!c) throw new RouteRequestInvalid({ message: `unknown expert "${name}"; this router knows [${this.experts.join(", ")}]` })
    return c
  }

  /** Ask every member of a layer in parallel; failures are dropped into the trace, never thrown. */
  private async askLayer(index: number, prompt: string, asks: ReadonlyArray<Ask>, deadlineMs: number, maxTokens?: number): Promise<LayerResult> {
    const t0 = performance.now()
    const results = await Promise.all(
      asks.map(async (a): Promise<{ trace: CandidateTrace; cand?: Candidate }> => {
        const s0 = performance.now()
        const req: ExpertRequest = { prompt, temperature: a.temperature ?? 0, maxTokens: maxTokens ?? this.opts.maxTokens, seed: a.seed }
        try {
          const r = await withDeadline(a.client.generate(req, { deadlineMs }), deadlineMs + 50, a.client.name)
          const text = normalizeAnswer(r.text)
          return {
            trace: { expert: a.client.name, sample: a.sample, ok: true, text, weight: a.weight, latencyMs: r.latencyMs, tokens: r.tokens },
            cand: { expert: a.client.name, text, weight: a.weight },
          }
        } catch (e) {
          const f = e instanceof ExpertFailure ? e : new ExpertFailure(a.client.name, "error", String((e as Error)?.message ?? e))
          return { trace: { expert: a.client.name, sample: a.sample, ok: false, dropped: f.reason, error: f.message, weight: a.weight, latencyMs: performance.now() - s0, tokens: 0 } }
        }
      }),
    )
    const trace: LayerTrace = { index, prompt, candidates: results.map((r) => r.trace), latencyMs: performance.now() - t0 }
    const answers = results.flatMap((r) => (r.cand ? [r.cand] : []))
    if (answers.length === 0)
      throw new NoExpertAnswered({
        message: `no expert answered layer ${index}: ${trace.candidates.map((c) => `${c.expert} (${c.dropped}: ${c.error})`).join("; ")}`,
        layer: index,
        failures: trace.candidates.map((c) => ({ expert: c.expert, reason: c.dropped ?? "error", error: c.error ?? "" })),
      })
    return { trace, answers }
  }

  private async aggregate(spec: AggregatorSpec, question: string, cands: ReadonlyArray<Candidate>, deadlineMs: number, maxTokens?: number): Promise<AggregatorTrace> {
    const t0 = performance.now()
    const ms = () => performance.now() - t0
    if (spec.kind === "vote") {
      const v = weightedVote(cands)
      return { kind: "vote", answer: v.answer, tally: v.tally, latencyMs: ms() }
    }
    if (spec.kind === "best-of-n") {
      const scorer = spec.scorer.startsWith("judge:") ? judgeScorer(this.client(spec.scorer.slice(6)), deadlineMs) : this.opts.scorers?.[spec.scorer]
      if (!scorer) throw new RouteRequestInvalid({ message: `unknown scorer "${spec.scorer}"; this router has [${Object.keys(this.opts.scorers ?? {}).join(", ")}] or judge:<expert>` })
      const b = await bestOfN(question, cands, scorer)
      return { kind: "best-of-n", answer: b.answer, scores: b.scores.map((s) => (Number.isFinite(s) ? s : -1)), latencyMs: ms() }
    }
    const agg = this.client(spec.expert)
    try {
      const m = await withDeadline(aggregateWithModel(agg, question, cands, { deadlineMs, maxTokens }), deadlineMs + 50, agg.name)
      return { kind: "model", answer: m.answer, expert: m.expert, latencyMs: ms() }
    } catch (e) {
      // the aggregator failed: the candidates are still good, so vote rather than fail the request
      const v = weightedVote(cands)
      return { kind: "vote", answer: v.answer, tally: v.tally, expert: agg.name, fallback: `aggregator ${agg.name} failed (${(e as Error).message}); used a weighted vote`, latencyMs: ms() }
    }
  }

  /** Answer one request; throws NoExpertAnswered or RouteRequestInvalid. */
  async route(req: RouteRequest): Promise<RouteResponse> {
    const t0 = performance.now()
    const mode = req.mode ?? this.defaultMode
    const deadlineMs = req.deadlineMs ?? this.deadlineMs
    const question = req.prompt
    const layers: LayerTrace[] = []
    let gate: GateTrace | undefined
    const gateFor = async (k?: number) => {
      const { decision, version } = await this.decide(question, k)
      gate = { version, ...decision }
      return decision
    }
    let aggregator: AggregatorTrace

    if (mode === "single") {
      const name = req.expert ?? this.opts.defaultExpert ?? (this.bundle ? (await gateFor(1)).chosen[0] : undefined)
      if (!name) throw new RouteRequestInvalid({ message: "mode single needs an expert: name one in the request, or load a gate" })
      const l = await this.askLayer(0, question, [{ client: this.client(name), weight: 1 }], deadlineMs, req.maxTokens)
      layers.push(l.trace)
      aggregator = { kind: "single", answer: l.answers[0].text, expert: name, latencyMs: 0 }
    } else if (mode === "moe") {
      const d = await gateFor(req.k)
      const l = await this.askLayer(0, question, d.chosen.map((n, i) => ({ client: this.client(n), weight: d.weights[i] })), deadlineMs, req.maxTokens)
      layers.push(l.trace)
      aggregator = await this.aggregate(req.aggregator ?? { kind: "vote" }, question, l.answers, deadlineMs, req.maxTokens)
    } else if (mode === "moa") {
      let proposers: Array<{ name: string; weight: number }>
      if (req.proposers) proposers = req.proposers.map((name) => ({ name, weight: 1 }))
      else {
        const d = await gateFor(req.k)
        proposers = d.chosen.map((name, i) => ({ name, weight: d.weights[i] }))
      }
      const asks = proposers.map((p) => ({ client: this.client(p.name), weight: p.weight }))
      let prompt = question
      let answers: ReadonlyArray<Candidate> = []
      for (let i = 0; i < (req.layers ?? 1); i++) {
        const l = await this.askLayer(i, prompt, asks, deadlineMs, req.maxTokens)
        layers.push(l.trace)
        answers = l.answers
        prompt = formatAggregatorPrompt(question, answers.map((a) => a.text))
      }
      aggregator = await this.aggregate(req.aggregator ?? this.opts.aggregator ?? { kind: "vote" }, question, answers, deadlineMs, req.maxTokens)
    } else {
      const name = req.expert ?? (await gateFor(1)).chosen[0]
      const client = this.client(name)
      const n = req.samples ?? 5
      const seed = req.seed ?? Math.floor(Math.random() * 2 ** 30)
      const temperature = req.temperature ?? 0.8
      const asks = Array.from({ length: n }, (_, i) => ({ client, weight: 1, sample: i, temperature, seed: seed + i }))
      const l = await this.askLayer(0, question, asks, deadlineMs, req.maxTokens)
      layers.push(l.trace)
      aggregator = await this.aggregate(req.aggregator ?? this.opts.aggregator ?? { kind: "vote" }, question, l.answers, deadlineMs, req.maxTokens)
    }
    return { answer: aggregator.answer, trace: { mode, gate, layers, aggregator, totalLatencyMs: performance.now() - t0 } }
  }

  /** `route` as an Effect with its typed errors in the error channel. */
  routeEffect(req: RouteRequest): Effect.Effect<RouteResponse, NoExpertAnswered | RouteRequestInvalid> {
    return Effect.tryPromise({
      try: () => this.route(req),
      catch: (e) =>
        e instanceof NoExpertAnswered || e instanceof RouteRequestInvalid ? e : new RouteRequestInvalid({ message: `router failed: ${(e as Error)?.message ?? String(e)}` }),
    })
  }
}

/** Reject with an ExpertFailure("timeout") if `p` has not settled after `ms` (for clients that ignore their deadline). */
const withDeadline = <A>(p: Promise<A>, ms: number, expert: string): Promise<A> =>
  new Promise<A>((resolve, reject) => {
    const t = setTimeout(() => reject(new ExpertFailure(expert, "timeout", `${expert} did not answer within ${ms} ms`)), ms)
    p.then(
      (a) => {
        clearTimeout(t)
        resolve(a)
      },
      (e) => {
        clearTimeout(t)
        reject(e)
      },
    )
  })
