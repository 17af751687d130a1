/**
 * Supervised fine-tuning, nanoGPT style: data → batches → loss → AdamW → log.
 *
 * One example per row from position 0 in the model's row format (packages/model data.ts):
 * [bos] prompt [sep] completion [eos], right-padded; the loss is
 * on the completion and its end marker only (SKILLS.md "Recipes"). The variables to train are
 * passed explicitly (all base params for full fine-tuning, adapter variables for LoRA/DoRA/QLoRA,
 * a new half each round for HFT). Per-task loss weights scale each row's tokens.
 */
import * as tf from "@tensorflow/tfjs"
import type { TuneModel, TuneTokenizer } from "./model.ts"
import { seededRng } from "./data/prep.ts"

export interface SftExample {
  readonly prompt: string
  readonly completion: string
  readonly task?: string
}

export interface EncodedRow {
  /** [bos] + prompt + [sep] + completion + [eos] */
  readonly ids: number[]
  /** index of the first completion token in ids */
  readonly start: number
}

export const encodeRow = (tok: TuneTokenizer, ex: SftExample, contextLength: number): EncodedRow => {
  const p = tok.encode(ex.prompt)
  const c = tok.encode(ex.completion)
  const ids = [tok.bos, ...p, tok.sep, ...c, tok.eos]
  if (ids.length > contextLength + 1)
    throw new Error(`example "${ex.prompt.slice(0, 40)}" is ${ids.length - 1} tokens with its markers, longer than the model's context of ${contextLength}`)
  return { ids, start: 2 + p.length }
}

/**
 * A batch as tensors: inputs [B,T], targets [B,T] (next token), weights [B,T] = row weight on
 * completion and end-marker targets, 0 elsewhere (prompt and padding).
 */
export const makeBatch = (rows: ReadonlyArray<EncodedRow>, pad: number, rowWeights?: ReadonlyArray<number>) => {
  const T = Math.max(...rows.map((r) => r.ids.length - 1))
  const B = rows.length
  const inp = new Int32Array(B * T).fill(pad)
  const tgt = new Int32Array(B * T).fill(pad)
  const w = new Float32Array(B * T)
  rows.forEach((r, b) => {
    for (let t = 0; t < r.ids.length - 1; t++) {
      inp[b * T + t] = r.ids[t]!
      tgt[b * T + t] = r.ids[t + 1]!
      if (t + 1 >= r.start) w[b * T + t] = rowWeights?.[b] ?? 1
    }
  })
  return { B, T, inp, tgt, w }
}

/** Weighted mean token cross-entropy over the completion tokens. Returns a scalar. */
export const completionLoss = (model: TuneModel, batch: ReturnType<typeof makeBatch>, training: boolean, seed?: number): tf.Scalar => {
  const { B, T, inp, tgt, w } = batch
  const V = model.config.vocabSize
  const logits = model.forward(tf.tensor2d(inp, [B, T], "int32"), { training, ...(seed !== undefined ? { seed } : {}) }) // [B,T,V]
  const logp = tf.logSoftmax(tf.reshape(logits, [B * T, V])) // [B*T, V]
  const picked = tf.sum(tf.mul(logp, tf.oneHot(tf.tensor1d(tgt, "int32"), V)), -1) // [B*T]
  const wt = tf.tensor1d(w) // [B*T]
  return tf.div(tf.neg(tf.sum(tf.mul(picked, wt))), tf.maximum(tf.sum(wt), 1e-9)) as tf.Scalar
}

export interface SftOptions {
  /** Variables to update; a function is asked again every step (HFT switches halves by round). */
  readonly variables: ReadonlyArray<tf.Variable> | ((step: number) => ReadonlyArray<tf.Variable>)
  readonly steps: number
  readonly batchSize?: number
  readonly lr?: number
  readonly warmup?: number
  readonly weightDecay?: number
  readonly clip?: number
  readonly betas?: readonly [number, number]
  readonly seed?: number
  /** Loss weight per task (rows of other tasks weigh 1). */
  readonly taskWeights?: ReadonlyMap<string, number> | Record<string, number>
  /** Validation set, its loss logged every `evalEvery` steps. */
  readonly validation?: ReadonlyArray<SftExample>
  readonly evalEvery?: number
  readonly logEvery?: number
  readonly onLog?: (entry: TrainLogEntry) => void
  /** Called after each step (progress bars); return false to stop early. */
  readonly onStep?: (step: number, loss: number) => boolean | void
  /** Set on adapters so their dropout is active while training. */
  readonly setTraining?: (on: boolean) => void
}

export interface TrainLogEntry {
  step: number
  loss?: number
  valLoss?: number
  lr?: number
  tokens?: number
  elapsedMs?: number
}

export interface SftResult {
  readonly log: TrainLogEntry[]
  readonly steps: number
  readonly tokens: number
  readonly elapsedMs: number
}

/** AdamW state per variable (by tfjs name), kept across rounds when a variable is frozen for a while. */
class AdamW {
  private m = new Map<string, tf.Tensor>()
  private v = new Map<string, tf.Tensor>()
  private t = new Map<string, number>()
  constructor(
    readonly b1: number,
    readonly b2: number,
    readonly wd: number,
    readonly eps = 1e-8,
  ) {}

  apply(vars: ReadonlyArray<tf.Variable>, grads: Record<string, tf.Tensor>, lr: number) {
    for (const v of vars) {
      const g = grads[v.name]
      if (!g) continue
      const t = (this.t.get(v.name) ?? 0) + 1
      this.t.set(v.name, t)
      const m0 = this.m.get(v.name)
      const v0 = this.v.get(v.name)
      const [m1, v1] = tf.tidy(() => [
        m0 ? tf.add(tf.mul(m0, this.b1), tf.mul(g, 1 - this.b1)) : tf.mul(g, 1 - this.b1),
        v0 ? tf.add(tf.mul(v0, this.b2), tf.mul(tf.square(g), 1 - this.b2)) : tf.mul(tf.square(g), 1 - this.b2),
      ])
      m0?.dispose()
      v0?.dispose()
      this.m.set(v.name, tf.keep(m1!))
      this.v.set(v.name, tf.keep(v1!))
      tf.tidy(() => {
        const mh = tf.div(m1!, 1 - this.b1 ** t)
        const vh = tf.div(v1!, 1 - this.b2 ** t)
        let upd: tf.Tensor = tf.div(mh, tf.add(tf.sqrt(vh), this.eps))
        if (this.wd > 0 && v.rank >= 2) upd = tf.add(upd, tf.mul(v, this.wd)) // decoupled decay on matrices
        v.assign(tf.sub(v, tf.mul(upd, lr)))
      })
    }
  }

  dispose() {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose()
    this.m.clear()
    this.v.clear()
  }
}

/** Mean completion loss over a set of examples (no gradient). */
export const evalLoss = (model: TuneModel, tok: TuneTokenizer, examples: ReadonlyArray<SftExample>, batchSize = 64): { loss: number; tokens: number } => {
  const rows = examples.map((e) => encodeRow(tok, e, model.config.contextLength))
  let total = 0
  let n = 0
  for (let i = 0; i < rows.length; i += batchSize) {
    const batch = makeBatch(rows.slice(i, i + batchSize), tok.pad)
    const k = batch.w.reduce((a, b) => a + b, 0)
    const l = tf.tidy(() => completionLoss(model, batch, false).dataSync()[0]!)
    total += l * k
    n += k
  }
  return { loss: n ? total / n : NaN, tokens: n }
}

/** Train on `examples` for `steps` steps; returns the log (JSON-serialisable, for the loss-curve plot). */
export const train = (model: TuneModel, tok: TuneTokenizer, examples: ReadonlyArray<SftExample>, o: SftOptions): SftResult => {
  const g = trainSteps(model, tok, examples, o)
  let r = g.next()
  while (!r.done) r = g.next()
  return r.value
}

/** The same, yielding to the event loop every `yieldEvery` steps (servers, progress bars, test runners stay responsive). */
export const trainAsync = async (model: TuneModel, tok: TuneTokenizer, examples: ReadonlyArray<SftExample>, o: SftOptions & { yieldEvery?: number }): Promise<SftResult> => {
  const g = trainSteps(model, tok, examples, o)
  const every = o.yieldEvery ?? 5
  let r = g.next()
  while (!r.done) {
    if (r.value % every === 0) await new Promise((res) => setImmediate(res))
    r = g.next()
  }
  return r.value
}

function* trainSteps(model: TuneModel, tok: TuneTokenizer, examples: ReadonlyArray<SftExample>, o: SftOptions): Generator<number, SftResult, void> {
  if (examples.length === 0) throw new Error("train: no training examples")
  if (!(Number.isInteger(o.steps) && o.steps > 0)) throw new Error(`train: steps must be a positive integer, got ${o.steps}`)
  const bs = o.batchSize ?? 64
  const lr0 = o.lr ?? 1e-3
  const warmup = o.warmup ?? Math.min(100, Math.floor(o.steps / 10))
  const clip = o.clip ?? 1.0
  const [b1, b2] = o.betas ?? [0.9, 0.99]
  const opt = new AdamW(b1, b2, o.weightDecay ?? 0.1)
  const rng = seededRng(o.seed ?? 0)
  const weights = o.taskWeights instanceof Map ? o.taskWeights : new Map(Object.entries(o.taskWeights ?? {}))
  const rows = examples.map((e) => encodeRow(tok, e, model.config.contextLength))
  const rowW = examples.map((e) => (e.task !== undefined ? (weights.get(e.task) ?? 1) : 1))
  let order: number[] = []
  const nextBatch = (): number[] => {
    const out: number[] = []
    while (out.length < bs) {
      if (order.length === 0) {
        order = rows.map((_, i) => i)
        for (let i = order.length - 1; i > 0; i--) {
          const j = Math.floor(rng() * (i + 1))
          ;[order[i], order[j]] = [order[j]!, order[i]!]
        }
      }
      out.push(order.pop()!)
      if (rows.length < bs && out.length === rows.length) break
    }
    return out
  }
  const log: TrainLogEntry[] = []
  const logEvery = o.logEvery ?? 10
  const t0 = Date.now()
  let tokens = 0
  let lossSum = 0
  let lossN = 0
  let step = 0
  o.setTraining?.(true)
  try {
    for (step = 1; step <= o.steps; step++) {
      const lr = step <= warmup ? (lr0 * step) / warmup : lr0
      const vars = typeof o.variables === "function" ? o.variables(step) : o.variables
      const idx = nextBatch()
      const batch = makeBatch(idx.map((i) => rows[i]!), tok.pad, idx.map((i) => rowW[i]!))
      tokens += batch.B * batch.T
      const loss = tf.tidy(() => {
        const { value, grads } = tf.variableGrads(() => completionLoss(model, batch, true, (o.seed ?? 0) * 100003 + step), vars as tf.Variable[])
        // global-norm clipping
        const gn = Math.sqrt(tf.addN(Object.values(grads).map((g) => tf.sum(tf.square(g)))).dataSync()[0]!)
        const scale = clip > 0 && gn > clip ? clip / gn : 1
        const clipped: Record<string, tf.Tensor> = {}
        for (const [k, g] of Object.entries(grads)) clipped[k] = scale === 1 ? g : tf.mul(g, scale)
        opt.apply(vars, clipped, lr)
        return value.dataSync()[0]!
      })
      if (!Number.isFinite(loss)) throw new Error(`train: the loss became ${loss} at step ${step}; lower the learning rate`)
      lossSum += loss
      lossN++
      if (step % logEvery === 0 || step === o.steps) {
        const entry: TrainLogEntry = { step, loss: lossSum / lossN, lr, tokens, elapsedMs: Date.now() - t0 }
        lossSum = 0
        lossN = 0
        if (o.validation && o.validation.length > 0 && (step % (o.evalEvery ?? logEvery * 10) === 0 || step === o.steps)) {
          o.setTraining?.(false)
          entry.valLoss = evalLoss(model, tok, o.validation).loss
          o.setTraining?.(true)
        }
        log.push(entry)
        o.onLog?.(entry)
      }
      if (o.onStep?.(step, loss) === false) break
      yield step
    }
  } finally {
    o.setTraining?.(false)
    opt.dispose()
  }
  return { log, steps: Math.min(step, o.steps), tokens, elapsedMs: Date.now() - t0 }
}
