// Training, as a straight line: data → batches → loss → AdamW → checkpoint.
//
// - AdamW with decoupled weight decay on matrices only (rank ≥ 2), warm-up then cosine
//   (or constant), global-norm gradient clipping, gradient accumulation.
// - Loss only on the tokens marked in each example's mask (answer-only SFT), or on all.
// - The data order and dropout masks are functions of (seed, step), and the optimizer
//   state is saved with every checkpoint, so a resumed run follows the same loss curve.

import * as fs from "node:fs"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs"
import { decodeSafetensors, encodeSafetensors, saveCheckpoint, type STTensor } from "./checkpoint.js"
import type { GPT } from "./gpt.js"
import { adamWStepInPlace } from "./native/index.js"
import type { Tokenizer } from "./tokenizer.js"

/** One training row: token ids from position 0, and which of them are targets (default: all but the first). */
export interface Example {
  ids: number[]
  /** 1 where the token is a target of the loss (e.g. answer + eos), same length as ids */
  mask?: number[]
}

export interface TrainConfig {
  steps: number
  batchSize: number
  gradAccum: number
  lr: number
  /** floor of the cosine schedule (default lr / 10) */
  minLr?: number
  warmupSteps: number
  schedule: "cosine" | "constant"
  weightDecay: number
  beta1: number
  beta2: number
  eps: number
  /** global-norm clip; 0 disables */
  gradClip: number
  seed: number
  /** validation every N steps (0: never) */
  evalEvery: number
  /** at most this many validation examples per evaluation (0: all) */
  evalExamples: number
  /** stop after this many evaluations without a better validation loss (0: never) */
  patience: number
  /** checkpoint every N steps into checkpointDir (0: only at the end) */
  checkpointEvery: number
  /** stop after this many seconds of training (0: no limit) */
  maxSeconds: number
  /**
   * Group by length: each run of this many micro-batches is drawn at once, sorted by row length
   * and dealt out in a shuffled order, so rows of like length share a batch and little of it is
   * padding (a mixture of 16- to 75-token rows padded to its longest row costs about 1.9× its
   * tokens). 0 or 1: off, every batch a plain random draw.
   */
  groupByLength: number
}

export const DEFAULT_TRAIN_CONFIG: TrainConfig = {
  steps: 1000,
  batchSize: 32,
  gradAccum: 1,
  lr: 1e-3,
  warmupSteps: 100,
  schedule: "cosine",
  weightDecay: 0.1,
  beta1: 0.9,
  beta2: 0.99,
  eps: 1e-8,
  gradClip: 1.0,
  seed: 1,
  evalEvery: 0,
  evalExamples: 0,
  patience: 0,
  checkpointEvery: 0,
  maxSeconds: 0,
  groupByLength: 0,
}

export interface Progress {
  step: number
  steps: number
  loss: number
  lr: number
  gradNorm: number
  tokensPerSec: number
  etaSec: number
  elapsedSec: number
  valLoss?: number
  valPerplexity?: number
}

export interface TrainOptions {
  model: GPT
  train: Example[]
  val?: Example[]
  config?: Partial<TrainConfig>
  /** variables to update (default: every model parameter). A Map names them for the optimizer state. */
  trainable?: tf.Variable[] | Map<string, tf.Variable>
  onProgress?: (p: Progress) => void
  /** where periodic and final checkpoints go (needs tokenizer) */
  checkpointDir?: string
  tokenizer?: Tokenizer
  /** continue from a checkpoint folder written by train (the model must already hold its weights) */
  resumeFrom?: string
}

export interface TrainResult {
  steps: number
  history: { step: number; loss: number; lr: number; valLoss?: number }[]
  finalLoss: number
  bestValLoss?: number
  stoppedEarly: boolean
  tokens: number
  seconds: number
}

export function makeTrainConfig(partial: Partial<TrainConfig> = {}): TrainConfig {
  const c = { ...DEFAULT_TRAIN_CONFIG, ...partial }
  for (const [k, v] of Object.entries(c)) {
    if (v === undefined) continue
    if (k === "schedule") {
      if (v !== "cosine" && v !== "constant") throw new Error(`train config: schedule must be "cosine" or "constant", got ${JSON.stringify(v)}`)
    } else if (typeof v !== "number" || !Number.isFinite(v) || v < 0)
      throw new Error(`train config: ${k} must be a non-negative number, got ${JSON.stringify(v)}`)
  }
  for (const k of ["steps", "batchSize", "gradAccum"] as const)
    if (!Number.isInteger(c[k]) || c[k] < 1) throw new Error(`train config: ${k} must be a positive integer, got ${c[k]}`)
  const known = new Set([...Object.keys(DEFAULT_TRAIN_CONFIG), "minLr"])
  for (const k of Object.keys(partial)) if (!known.has(k)) throw new Error(`train config has no field "${k}" (known: ${[...known].join(", ")})`)
  return c
}

/** Learning rate at `step` (0-based): linear warm-up, then cosine down to minLr or constant. */
export function learningRate(c: TrainConfig, step: number): number {
  if (step < c.warmupSteps) return (c.lr * (step + 1)) / c.warmupSteps
  if (c.schedule === "constant") return c.lr
  const minLr = c.minLr ?? c.lr / 10
  const progress = Math.min(1, (step - c.warmupSteps) / Math.max(1, c.steps - c.warmupSteps))
  return minLr + 0.5 * (c.lr - minLr) * (1 + Math.cos(Math.PI * progress))
}

// ---------------------------------------------------------------- data

/** mulberry32: a small seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function permutation(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n)
  for (let i = 0; i < n; i++) p[i] = i
  const r = rng(seed)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1))
    ;[p[i], p[j]] = [p[j], p[i]]
  }
  return p
}

/** The examples of micro-batch `m`: a pure function of (seed, m), so resuming needs only the step. */
export function batchIndices(n: number, batchSize: number, seed: number, m: number): number[] {
  const out: number[] = []
  let perm: Uint32Array | undefined
  let permEpoch = -1
  for (let k = 0; k < batchSize; k++) {
    const c = m * batchSize + k
    const epoch = Math.floor(c / n)
    if (epoch !== permEpoch) {
      perm = permutation(n, seed * 7919 + epoch)
      permEpoch = epoch
    }
    out.push(perm![c % n])
  }
  return out
}

/**
 * The rows of micro-batch `m` under group-by-length: micro-batches g·G … g·G+G−1 (g = ⌊m/G⌋) are
 * drawn as by `batchIndices`, their rows sorted by length and cut into G batches, which the group
 * takes in a seeded shuffled order. Every row is still visited once an epoch.
 */
export function groupedBatchIndices(lengths: ArrayLike<number>, batchSize: number, seed: number, m: number, group: number): number[] {
  return groupBatches(lengths, batchSize, seed, Math.floor(m / group), group)[m % group]!
}

/** All G batches of group g, in the order the group takes them. */
function groupBatches(lengths: ArrayLike<number>, batchSize: number, seed: number, g: number, group: number): number[][] {
  const all: number[] = []
  for (let j = 0; j < group; j++) all.push(...batchIndices(lengths.length, batchSize, seed, g * group + j))
  all.sort((a, b) => lengths[a]! - lengths[b]! || a - b)
  return Array.from(permutation(group, seed * 31 + g), (k) => all.slice(k * batchSize, (k + 1) * batchSize))
}

export interface Batch {
  ids: tf.Tensor2D // (B, T) inputs
  targets: tf.Tensor1D // (B*T) next tokens
  weights: tf.Tensor1D // (B*T) 1 where the loss counts
  tokens: number
}

/** Rows from position 0, right-padded with 0 to the longest row (at most contextLength + 1 tokens). */
export function makeBatch(examples: Example[], contextLength: number): Batch {
  const rows = examples.map((e) => {
    if (e.mask && e.mask.length !== e.ids.length) throw new Error(`example mask has ${e.mask.length} entries for ${e.ids.length} ids`)
    const ids = e.ids.slice(0, contextLength + 1)
    const mask = (e.mask ?? e.ids.map((_, i) => (i === 0 ? 0 : 1))).slice(0, contextLength + 1)
    return { ids, mask }
  })
  const T = Math.max(1, Math.max(...rows.map((r) => r.ids.length)) - 1)
  const B = rows.length
  const ids = new Int32Array(B * T)
  const targets = new Int32Array(B * T)
  const weights = new Float32Array(B * T)
  let tokens = 0
  rows.forEach((r, b) => {
    for (let t = 0; t < r.ids.length - 1; t++) {
      ids[b * T + t] = r.ids[t]
      targets[b * T + t] = r.ids[t + 1]
      weights[b * T + t] = r.mask[t + 1] ? 1 : 0
    }
    tokens += Math.max(0, r.ids.length - 1)
  })
  return {
    ids: tf.tensor2d(ids, [B, T], "int32"),
    targets: tf.tensor1d(targets, "int32"),
    weights: tf.tensor1d(weights, "float32"),
    tokens,
  }
}

function disposeBatch(b: Batch) {
  b.ids.dispose()
  b.targets.dispose()
  b.weights.dispose()
}

/** Mean next-token cross-entropy over the weighted positions. logits (N, V). */
export function maskedCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D, weights: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const logp = tf.logSoftmax(logits) // (N, V)
    const nll = tf.neg(tf.sum(tf.mul(logp, tf.oneHot(targets, logits.shape[1])), -1)) // (N)
    return tf.div(tf.sum(tf.mul(nll, weights)), tf.maximum(tf.sum(weights), 1)) as tf.Scalar
  })
}

function batchLoss(model: GPT, b: Batch, training: boolean, seed?: number): tf.Scalar {
  return tf.tidy(() => maskedCrossEntropy(model.head(model.hidden(b.ids, { training, seed })), b.targets, b.weights))
}

/** Token-weighted validation loss and perplexity over `examples`. */
export function evaluateLoss(model: GPT, examples: Example[], batchSize = 32): { loss: number; perplexity: number; tokens: number } {
  let sum = 0
  let count = 0
  for (let i = 0; i < examples.length; i += batchSize) {
    const b = makeBatch(examples.slice(i, i + batchSize), model.config.contextLength)
    const n = tf.tidy(() => tf.sum(b.weights)).arraySync() as number
    const l = batchLoss(model, b, false)
    sum += (l.arraySync() as number) * n
    count += n
    l.dispose()
    disposeBatch(b)
  }
  const loss = count ? sum / count : NaN
  return { loss, perplexity: Math.exp(loss), tokens: count }
}

// ---------------------------------------------------------------- AdamW

export class AdamW {
  readonly m = new Map<string, tf.Variable>()
  readonly v = new Map<string, tf.Variable>()
  constructor(readonly params: Map<string, tf.Variable>) {
    for (const [name, p] of params) {
      const z = tf.zerosLike(p)
      this.m.set(name, tf.variable(z, false))
      this.v.set(name, tf.variable(z, false))
      z.dispose()
    }
  }

  /** One update with gradients `grads` (by param name) scaled by `scale` (clipping / accumulation). */
  /**
   * On the native backend each parameter is updated by one fused in-place native loop
   * (adamWStepInPlace: same formula, ~12 fewer tfjs ops per parameter); elsewhere, or for a
   * tensor it does not take, by the tensor-level update below. `fused: false` forces the latter.
   */
  step(grads: Map<string, tf.Tensor>, scale: tf.Scalar, t: number, lr: number, c: TrainConfig, opts: { fused?: boolean } = {}) {
    const bc1 = 1 - Math.pow(c.beta1, t)
    const bc2 = 1 - Math.pow(c.beta2, t)
    const fusedScale = opts.fused !== false && tf.getBackend() === "native" ? scale.dataSync()[0] : undefined
    tf.tidy(() => {
      for (const [name, p] of this.params) {
        const g0 = grads.get(name)
        if (!g0) continue
        const m = this.m.get(name)!
        const v = this.v.get(name)!
        const decayed = p.rank >= 2 && c.weightDecay > 0
        if (fusedScale !== undefined && adamWStepInPlace(p, g0, m, v, {
          lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: decayed ? c.weightDecay : 0, step: t, gradScale: fusedScale,
        })) continue
        const g = tf.mul(g0, scale)
        m.assign(tf.add(tf.mul(m, c.beta1), tf.mul(g, 1 - c.beta1)))
        v.assign(tf.add(tf.mul(v, c.beta2), tf.mul(tf.square(g), 1 - c.beta2)))
        const update = tf.div(tf.mul(m, 1 / bc1), tf.add(tf.sqrt(tf.mul(v, 1 / bc2)), c.eps))
        const decay = p.rank >= 2 && c.weightDecay > 0 // decoupled, matrices only
        p.assign(tf.sub(decay ? tf.mul(p, 1 - lr * c.weightDecay) : p, tf.mul(update, lr)))
      }
    })
  }

  stateTensors(): Map<string, STTensor> {
    const out = new Map<string, STTensor>()
    for (const [kind, map] of [["m", this.m], ["v", this.v]] as const)
      for (const [name, t] of map) out.set(`${kind}.${name}`, { dtype: "F32", shape: t.shape, data: t.dataSync() as Float32Array })
    return out
  }

  loadState(tensors: Map<string, STTensor>, file: string) {
    for (const [kind, map] of [["m", this.m], ["v", this.v]] as const)
      for (const [name, t] of map) {
        const s = tensors.get(`${kind}.${name}`)
        if (!s) throw new Error(`${file}: optimizer state "${kind}.${name}" is missing`)
        if (JSON.stringify(s.shape) !== JSON.stringify(t.shape))
          throw new Error(`${file}: optimizer state "${kind}.${name}" has shape [${s.shape}], expected [${t.shape}]`)
        tf.tidy(() => t.assign(tf.tensor(s.data, s.shape, "float32")))
      }
  }

  dispose() {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose()
  }
}

// ---------------------------------------------------------------- the loop

interface TrainerState {
  step: number
  history: TrainResult["history"]
  bestValLoss?: number
  badEvals: number
  tokens: number
}

function trainableMap(model: GPT, trainable: TrainOptions["trainable"]): Map<string, tf.Variable> {
  if (!trainable) return new Map(model.params)
  if (trainable instanceof Map) return trainable
  const byVar = new Map<tf.Variable, string>()
  for (const [n, v] of model.params) byVar.set(v, n)
  return new Map(trainable.map((v) => [byVar.get(v) ?? v.name, v]))
}

export async function train(opts: TrainOptions): Promise<TrainResult> {
  const { model, onProgress } = opts
  const c = makeTrainConfig(opts.config)
  if (opts.train.length === 0) throw new Error("train: no training examples")
  if (opts.checkpointDir && !opts.tokenizer) throw new Error("train: checkpointDir needs the tokenizer to save with the model")
  const params = trainableMap(model, opts.trainable)
  if (params.size === 0) throw new Error("train: no trainable variables")
  const optimizer = new AdamW(params)
  let state: TrainerState = { step: 0, history: [], badEvals: 0, tokens: 0 }
  if (opts.resumeFrom) {
    const file = path.join(opts.resumeFrom, "optimizer.safetensors")
    if (!fs.existsSync(file)) throw new Error(`${file}: not found; resume needs a checkpoint written by train()`)
    optimizer.loadState(decodeSafetensors(fs.readFileSync(file), file).tensors, file)
    state = JSON.parse(fs.readFileSync(path.join(opts.resumeFrom, "trainer_state.json"), "utf8")) as TrainerState
  }

  const save = () => {
    if (!opts.checkpointDir) return
    saveCheckpoint(opts.checkpointDir, model, opts.tokenizer!, {
      metadata: { step: String(state.step) },
      extraFiles: {
        "optimizer.safetensors": encodeSafetensors(optimizer.stateTensors()),
        "trainer_state.json": JSON.stringify(state) + "\n",
        "train_config.json": JSON.stringify(c, null, 2) + "\n",
      },
    })
  }

  const names = [...params.keys()]
  const vars = names.map((n) => params.get(n)!)
  const started = performance.now()
  let windowStart = started
  let windowTokens = 0
  let stoppedEarly = false
  const startStep = state.step
  const val = opts.val && c.evalExamples > 0 ? opts.val.slice(0, c.evalExamples) : opts.val
  // the rows of micro-batch m; under group-by-length a group's G batches are made once
  const lengths = Int32Array.from(opts.train, (e) => Math.min(e.ids.length, model.config.contextLength + 1))
  let grouped: { g: number; batches: number[][] } | undefined
  const drawBatch = (m: number): number[] => {
    const G = c.groupByLength
    if (G <= 1) return batchIndices(opts.train.length, c.batchSize, c.seed, m)
    const g = Math.floor(m / G)
    if (grouped?.g !== g) grouped = { g, batches: groupBatches(lengths, c.batchSize, c.seed, g, G) }
    return grouped.batches[m % G]!
  }

  while (state.step < c.steps) {
    const step = state.step
    const lr = learningRate(c, step)
    // forward + backward over gradAccum micro-batches, summing gradients
    let lossSum = 0
    let grads: tf.Tensor[] | undefined
    for (let a = 0; a < c.gradAccum; a++) {
      const micro = step * c.gradAccum + a
      const batch = makeBatch(
        drawBatch(micro).map((i) => opts.train[i]),
        model.config.contextLength,
      )
      const { value, grads: g } = tf.variableGrads(() => batchLoss(model, batch, true, c.seed * 1_000_003 + micro), vars)
      lossSum += value.dataSync()[0]
      value.dispose()
      const gl = vars.map((v) => g[v.name])
      if (!grads) grads = gl
      else {
        const summed = tf.tidy(() => grads!.map((x, i) => tf.add(x, gl[i])))
        tf.dispose([...grads, ...gl])
        grads = summed
      }
      state.tokens += batch.tokens
      windowTokens += batch.tokens
      disposeBatch(batch)
    }
    // clip by global norm (of the mean gradient) and update
    const [scale, normT] = tf.tidy(() => {
      const inv = 1 / c.gradAccum
      const norm = tf.mul(tf.sqrt(tf.addN(grads!.map((g) => tf.sum(tf.square(g))))), inv)
      const s = c.gradClip > 0 ? tf.mul(tf.minimum(1, tf.div(c.gradClip, tf.add(norm, 1e-6))), inv) : tf.scalar(inv)
      return [s as tf.Scalar, norm as tf.Scalar]
    })
    optimizer.step(new Map(names.map((n, i) => [n, grads![i]])), scale, step + 1, lr, c)
    const gradNorm = normT.dataSync()[0]
    tf.dispose([...grads!, scale, normT])
    state.step = step + 1
    const loss = lossSum / c.gradAccum
    const entry: TrainResult["history"][number] = { step: state.step, loss, lr }
    state.history.push(entry)

    let valLoss: number | undefined
    if (val && val.length && c.evalEvery > 0 && (state.step % c.evalEvery === 0 || state.step === c.steps)) {
      valLoss = evaluateLoss(model, val, c.batchSize).loss
      entry.valLoss = valLoss
      if (state.bestValLoss === undefined || valLoss < state.bestValLoss) {
        state.bestValLoss = valLoss
        state.badEvals = 0
      } else state.badEvals++
      if (c.patience > 0 && state.badEvals >= c.patience) stoppedEarly = true
    }
    const now = performance.now()
    const elapsedSec = (now - started) / 1000
    const tokensPerSec = windowTokens / Math.max(1e-3, (now - windowStart) / 1000)
    if (now - windowStart > 5000) {
      windowStart = now
      windowTokens = 0
    }
    const done = state.step - startStep
    const etaSec = (elapsedSec / done) * (c.steps - state.step)
    onProgress?.({
      step: state.step, steps: c.steps, loss, lr, gradNorm, tokensPerSec, etaSec, elapsedSec,
      ...(valLoss !== undefined ? { valLoss, valPerplexity: Math.exp(valLoss) } : {}),
    })
    if (c.checkpointEvery > 0 && state.step % c.checkpointEvery === 0 && state.step < c.steps) save()
    if (stoppedEarly) break
    if (c.maxSeconds > 0 && elapsedSec > c.maxSeconds) break
    if (state.step % 8 === 0) await new Promise((r) => setImmediate(r)) // let I/O breathe
  }
  save()
  optimizer.dispose()
  const last = state.history[state.history.length - 1]
  return {
    steps: state.step,
    history: state.history,
    finalLoss: last?.loss ?? NaN,
    bestValLoss: state.bestValLoss,
    stoppedEarly,
    tokens: state.tokens,
    seconds: (performance.now() - started) / 1000,
  }
}
