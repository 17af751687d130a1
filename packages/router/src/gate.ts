// The gate: a small softmax network from prompt features to a distribution over experts.
//
//   x [N,D] ─(hidden>0: fc1 + gelu)─▶ h [N,H] ─out─▶ clean logits [N,E]
//   training with noise (Shazeer et al. 2017, "noisy top-k gating"):
//     logits = clean + ε · softplus(h @ Wnoise),   ε ~ N(0, 1)
//   inference: p = softmax(clean / temperature), then capacity, threshold and top-k.
//   loss = cross-entropy(targets, softmax(logits)) + lbCoef · E · Σ_i f_i · P_i
//   (the Switch Transformer load-balancing loss: f_i = share of the batch whose top-1 is
//    expert i, P_i = mean gate probability of expert i; it equals 1 when load is uniform
//    and E when every query goes to one expert.)
//
// Plain tfjs, every step in tf.tidy, shapes in comments.
import * as tf from "@tensorflow/tfjs"
import { type FeatureSpec } from "./features.ts"
import { decodeSafetensors, encodeSafetensors, type NamedTensor } from "./safetensors.ts"

export interface GateConfig {
  /** Output order of the gate: one logit per expert name. */
  readonly experts: ReadonlyArray<string>
  readonly features: FeatureSpec
  /** 0 = a linear gate; > 0 = one hidden layer of that width (GELU). */
  readonly hidden: number
  /** Softmax temperature at inference (< 1 sharpens, > 1 flattens). */
  readonly temperature: number
  /** How many experts a `moe` request asks by default. */
  readonly k: number
  /** Learned noise on the logits while training (noisy top-k). */
  readonly noisy: boolean
  /** Confidence (top adjusted probability) below which the fallback applies. */
  readonly threshold: number
  /** Expert to use when confidence is low; null = widen k to 2k instead. */
  readonly fallback: string | null
}

export const defaultGateConfig = (experts: ReadonlyArray<string>, features: FeatureSpec, over: Partial<GateConfig> = {}): GateConfig => ({
  experts: [...experts],
  features,
  hidden: 0,
  temperature: 1,
  k: 1,
  noisy: true,
  threshold: 0,
  fallback: null,
  ...over,
})

export const validateGateConfig = (c: GateConfig): GateConfig => {
  const problems: string[] = []
  if (c.experts.length < 1) problems.push("experts must name at least one expert")
  if (new Set(c.experts).size !== c.experts.length) problems.push(`experts must be unique, got [${c.experts.join(", ")}]`)
  if (!Number.isInteger(c.hidden) || c.hidden < 0) problems.push(`hidden must be an integer ≥ 0, got ${c.hidden}`)
  if (!(c.temperature > 0)) problems.push(`temperature must be > 0, got ${c.temperature}`)
  if (!Number.isInteger(c.k) || c.k < 1 || c.k > c.experts.length) problems.push(`k must be an integer in 1..${c.experts.length}, got ${c.k}`)
  if (!(c.threshold >= 0 && c.threshold <= 1)) problems.push(`threshold must be in [0, 1], got ${c.threshold}`)
  if (c.fallback !== null && !c.experts.includes(c.fallback)) problems.push(`fallback "${c.fallback}" is not one of the experts [${c.experts.join(", ")}]`)
  if (problems.length) throw new Error(`invalid gate config: ${problems.join("; ")}`)
  return c
}

/** What the router knows about an expert's capacity right now (from $SRV.STATS and its own in-flight count). */
export interface ExpertLoad {
  /** false when the expert did not answer the last stats poll or is marked down. */
  readonly healthy: boolean
  /** Requests the router has in flight to this expert. */
  readonly inflight: number
  /** Share of recent requests that failed (0..1). */
  readonly errorRate: number
  /** In-flight requests at which the share halves (the expert's concurrency, when it reports one). */
  readonly capacity?: number
}

/**
 * How much of its gate probability an expert keeps given its load:
 * 0 when dead, halved when `inflight` reaches its capacity (default `queueCapacity`), scaled down by its error rate.
 */
export const availability = (load: ExpertLoad | undefined, queueCapacity = 4): number => {
  if (!load) return 1
  if (!load.healthy) return 0
  return (1 / (1 + load.inflight / (load.capacity ?? queueCapacity))) * (1 - Math.min(1, Math.max(0, load.errorRate)))
}

export interface GateDecision {
  /** Gate probabilities at the configured temperature, by expert. */
  readonly probs: Record<string, number>
  /** Probabilities after capacity weighting, renormalised. */
  readonly adjusted: Record<string, number>
  /** Experts chosen, best first. */
  readonly chosen: ReadonlyArray<string>
  /** Weights of the chosen experts (adjusted probabilities renormalised over the chosen). */
  readonly weights: ReadonlyArray<number>
  readonly confidence: number
  /** "top-k", "fallback" (low confidence → fallback expert) or "widened" (low confidence → 2k). */
  readonly rule: "top-k" | "fallback" | "widened"
}

export class GateUnavailable extends Error {
  readonly _tag = "GateUnavailable"
}

const gelu = (x: tf.Tensor): tf.Tensor => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)))

export class Gate {
  readonly config: GateConfig
  readonly params = new Map<string, tf.Variable>()
  private readonly inDim: number

  constructor(config: GateConfig, seed = 0) {
    this.config = validateGateConfig(config)
    const D = config.features.dim
    const H = config.hidden
    const E = config.experts.length
    this.inDim = H > 0 ? H : D
    const init = (name: string, shape: number[], std: number, s: number) =>
      this.params.set(name, tf.variable(std === 0 ? tf.zeros(shape) : tf.randomNormal(shape, 0, std, "float32", seed + s), true, `gate.${name}.${seed}.${Math.random()}`))
    if (H > 0) {
      init("fc1.w", [D, H], Math.sqrt(2 / D), 1) // [D,H]
      init("fc1.b", [H], 0, 0)
    }
    init("out.w", [this.inDim, E], 0.02, 2) // [D|H, E]
    init("out.b", [E], 0, 0)
    init("noise.w", [this.inDim, E], 0, 0) // starts at softplus(0) ≈ 0.69 noise std
  }

  get experts(): ReadonlyArray<string> {
    return this.config.experts
  }

  private p(name: string): tf.Variable {
    const v = this.params.get(name)
    if (!v) throw new Error(`gate parameter ${name} missing`)
    return v
  }

  /** Hidden representation h [N, D|H]. */
  private hiddenOf(x: tf.Tensor2D): tf.Tensor2D {
    if (this.config.hidden === 0) return x
    return gelu(tf.add(tf.matMul(x, this.p("fc1.w")), this.p("fc1.b"))) as tf.Tensor2D // [N,H]
  }

  /** Logits [N,E]; with `noise` the learned noisy-top-k perturbation is added. */
  logits(x: tf.Tensor2D, noise = false): tf.Tensor2D {
    const h = this.hiddenOf(x) // [N,D|H]
    const clean = tf.add(tf.matMul(h, this.p("out.w")), this.p("out.b")) as tf.Tensor2D // [N,E]
    if (!noise) return clean
    const std = tf.softplus(tf.matMul(h, this.p("noise.w"))) // [N,E]
    return tf.add(clean, tf.mul(tf.randomNormal(clean.shape), std)) as tf.Tensor2D
  }

  /** Gate probabilities [N][E] at the configured temperature, no noise. */
  probs(features: ReadonlyArray<Float32Array>): number[][] {
    if (features.length === 0) return []
    return tf.tidy(() => {
      const x = this.stack(features) // [N,D]
      const p = tf.softmax(tf.div(this.logits(x), this.config.temperature)) // [N,E]
      return p.arraySync() as number[][]
    })
  }

  stack(features: ReadonlyArray<Float32Array>): tf.Tensor2D {
    const D = this.config.features.dim
    const flat = new Float32Array(features.length * D)
    features.forEach((f, i) => {
      if (f.length !== D) throw new Error(`feature vector ${i} has length ${f.length}; this gate expects ${D}`)
      flat.set(f, i * D)
    })
    return tf.tensor2d(flat, [features.length, D])
  }

  /**
   * Decide who answers one prompt: capacity-weighted probabilities, then the confidence
   * threshold (fallback expert or widened k), then top-k among experts that are alive.
   */
  decide(probs: ReadonlyArray<number>, opts: { k?: number; load?: Record<string, ExpertLoad>; queueCapacity?: number } = {}): GateDecision {
    const E = this.experts.length
    const k = opts.k ?? this.config.k
    const avail = this.experts.map((e) => availability(opts.load?.[e], opts.queueCapacity))
    const raw = this.experts.map((_, i) => probs[i] * avail[i])
    const total = raw.reduce((a, b) => a + b, 0)
    const alive = this.experts.filter((_, i) => avail[i] > 0)
    if (alive.length === 0) throw new GateUnavailable(`no expert is available: all of [${this.experts.join(", ")}] are down; start an expert or check \`moa status\``)
    // if every alive expert has ~0 probability, fall back to availability alone
    const adjusted = total > 1e-12 ? raw.map((r) => r / total) : avail.map((a) => a / avail.reduce((x, y) => x + y, 0))
    const order = [...Array(E).keys()].filter((i) => avail[i] > 0).sort((a, b) => adjusted[b] - adjusted[a])
    const confidence = adjusted[order[0]]
    let rule: GateDecision["rule"] = "top-k"
    let chosenIdx = order.slice(0, Math.min(k, order.length))
    if (confidence < this.config.threshold) {
      const fb = this.config.fallback
      const fbIdx = fb === null ? -1 : this.experts.indexOf(fb)
      if (fbIdx >= 0 && avail[fbIdx] > 0) {
        rule = "fallback"
        chosenIdx = [fbIdx]
      } else {
        rule = "widened"
        chosenIdx = order.slice(0, Math.min(2 * k, order.length))
      }
    }
    const wsum = chosenIdx.reduce((a, i) => a + adjusted[i], 0)
    const rec = (xs: ReadonlyArray<number>) => Object.fromEntries(this.experts.map((e, i) => [e, xs[i]]))
    return {
      probs: rec(probs),
      adjusted: rec(adjusted),
      chosen: chosenIdx.map((i) => this.experts[i]),
      weights: chosenIdx.map((i) => (wsum > 0 ? adjusted[i] / wsum : 1 / chosenIdx.length)),
      confidence,
      rule,
    }
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose()
    this.params.clear()
  }

  // ---- save / load: safetensors in PyTorch nn.Linear layout [out, in] + a JSON config ----

  toSafetensors(meta: Record<string, string> = {}): Uint8Array {
    const tensors: Record<string, NamedTensor> = {}
    const linear = (file: string, w: string, b?: string) => {
      const wt = tf.tidy(() => tf.transpose(this.p(w))) // [in,out] → [out,in]
      tensors[`${file}.weight`] = { shape: wt.shape, data: wt.dataSync() as Float32Array }
      wt.dispose()
      if (b) tensors[`${file}.bias`] = { shape: this.p(b).shape, data: this.p(b).dataSync() as Float32Array }
    }
    if (this.config.hidden > 0) linear("fc1", "fc1.w", "fc1.b")
    linear("out", "out.w", "out.b")
    linear("noise", "noise.w")
    return encodeSafetensors(tensors, { format: "moa-gate", ...meta })
  }

  static fromSafetensors(config: GateConfig, bytes: Uint8Array): Gate {
    const gate = new Gate(config)
    const { tensors } = decodeSafetensors(bytes)
    const load = (file: string, w: string, b?: string) => {
      const tw = tensors[`${file}.weight`]
      if (!tw) throw new Error(`gate weights lack "${file}.weight"; was the file written for this config (hidden=${config.hidden})?`)
      const [out, inn] = tw.shape
      const want = gate.p(w).shape
      if (inn !== want[0] || out !== want[1]) throw new Error(`"${file}.weight" has shape [${tw.shape}] but the config needs [${want[1]}, ${want[0]}]`)
      tf.tidy(() => gate.p(w).assign(tf.transpose(tf.tensor2d(tw.data, [out, inn]))))
      if (b) {
        const tb = tensors[`${file}.bias`]
        if (!tb) throw new Error(`gate weights lack "${file}.bias"`)
        gate.p(b).assign(tf.tensor1d(tb.data))
      }
    }
    if (config.hidden > 0) load("fc1", "fc1.w", "fc1.b")
    load("out", "out.w", "out.b")
    load("noise", "noise.w")
    return gate
  }
}

/** Switch Transformer load-balancing loss E · Σ f_i · P_i for probabilities p [N,E]: 1 = balanced, E = collapsed. */
export const loadBalanceLoss = (p: tf.Tensor2D): tf.Scalar =>
  tf.tidy(() => {
    const [, E] = p.shape
    const top1 = tf.oneHot(tf.argMax(p, 1), E).toFloat() // [N,E], no gradient
    const f = tf.mean(top1, 0) // [E] share dispatched
    const P = tf.mean(p, 0) // [E] mean probability
    return tf.mul(E, tf.sum(tf.mul(f, P))) as tf.Scalar
  })

export interface TrainGateOptions {
  readonly epochs?: number
  readonly batchSize?: number
  readonly lr?: number
  /** Weight of the load-balancing loss (Switch uses 0.01). */
  readonly lbCoef?: number
  readonly weightDecay?: number
  readonly onEpoch?: (epoch: number, stats: { loss: number; ce: number; lb: number }) => void
}

export interface TrainGateResult {
  readonly history: ReadonlyArray<{ loss: number; ce: number; lb: number }>
}

/**
 * Fit the gate to target distributions over experts (targets[i] sums to 1: who answered
 * prompt i best). Adam, mini-batches, cross-entropy + load-balancing loss. Yields to the event
 * loop after each epoch, so an agent keeps serving while it trains.
 */
export const trainGate = async (gate: Gate, features: ReadonlyArray<Float32Array>, targets: ReadonlyArray<ArrayLike<number>>, opts: TrainGateOptions = {}): Promise<TrainGateResult> => {
  const E = gate.experts.length
  if (features.length !== targets.length) throw new Error(`trainGate: ${features.length} feature rows but ${targets.length} targets`)
  if (features.length === 0) throw new Error("trainGate: no training examples; run prompts through the experts first")
  targets.forEach((t, i) => {
    if (t.length !== E) throw new Error(`target ${i} has ${t.length} entries; the gate has ${E} experts`)
  })
  const epochs = opts.epochs ?? 60
  const batchSize = opts.batchSize ?? 64
  const lbCoef = opts.lbCoef ?? 0.01
  const wd = opts.weightDecay ?? 1e-4
  const optimizer = tf.train.adam(opts.lr ?? 0.02)
  const vars = [...gate.params.values()]
  const X = gate.stack(features) // [N,D]
  const flatT = new Float32Array(targets.length * E)
  targets.forEach((t, i) => flatT.set(Array.from(t), i * E))
  const Y = tf.tensor2d(flatT, [targets.length, E]) // [N,E]
  const N = features.length
  const history: Array<{ loss: number; ce: number; lb: number }> = []
  for (let epoch = 0; epoch < epochs; epoch++) {
    const perm = tf.util.createShuffledIndices(N)
    let sumLoss = 0
    let sumCe = 0
    let sumLb = 0
    let batches = 0
    for (let start = 0; start < N; start += batchSize) {
      const idx = tf.tensor1d(Array.from(perm.slice(start, start + batchSize)), "int32")
      const parts = { ce: 0, lb: 0 }
      const loss = optimizer.minimize(() => {
        const xb = tf.gather(X, idx) as tf.Tensor2D // [B,D]
        const yb = tf.gather(Y, idx) as tf.Tensor2D // [B,E]
        const logits = gate.logits(xb, gate.config.noisy) // [B,E]
        const ce = tf.neg(tf.mean(tf.sum(tf.mul(yb, tf.logSoftmax(logits)), 1))) as tf.Scalar
        const lb = loadBalanceLoss(tf.softmax(logits) as tf.Tensor2D)
        let l2: tf.Scalar = tf.scalar(0)
        for (const [name, v] of gate.params) if (name.endsWith(".w")) l2 = tf.add(l2, tf.sum(tf.square(v))) as tf.Scalar
        parts.ce = ce.dataSync()[0]
        parts.lb = lb.dataSync()[0]
        return tf.addN([ce, tf.mul(lbCoef, lb), tf.mul(wd, l2)]) as tf.Scalar
      }, true, vars)
      sumLoss += loss!.dataSync()[0]
      sumCe += parts.ce
      sumLb += parts.lb
      batches++
      loss!.dispose()
      idx.dispose()
    }
    const stats = { loss: sumLoss / batches, ce: sumCe / batches, lb: sumLb / batches }
    history.push(stats)
    opts.onEpoch?.(epoch, stats)
    await new Promise((r) => setImmediate(r)) // let the process serve requests between epochs
  }
  X.dispose()
  Y.dispose()
  optimizer.dispose()
  return { history }
}
