/**
 * Training jobs on a serving expert: a job names the algorithm, the adapter and the version to
 * start from, the data (inline) and hyper-parameters; the expert trains a new adapter version in
 * process, one optimizer step at a time with a yield between steps (generate keeps being
 * answered), saves it atomically in PEFT's layout under its artifacts folder and replies with the
 * new version id, the loss curve and timings.
 *
 * Algorithms and the data each expects (text; the expert tokenizes in its training format
 * `bos prompt sep completion eos`):
 *   sft                         { prompt, completion }
 *   dpo | ipo | simpo | orpo    { prompt, chosen, rejected }        (tune's trainDPO, one step per call)
 *   kto                         { prompt, completion, label }       (tune's trainKTO, one step per call)
 *   grpo                        { prompt, completions[], rewards[] } groups scored by the caller
 *                               (offline GRPO: group-normalised advantages, clipped objective with
 *                               π_old = the starting version, taken once per job)
 *   ppo                         { prompt, completion, reward } rollouts sampled from the starting
 *                               version and scored by the caller (OpenRLHF's split: rollout and
 *                               reward elsewhere, the actor and its critic here): a value head on
 *                               the trunk, GAE, the clipped policy and value losses
 * Reference log-probs (DPO, KTO, GRPO with beta > 0) come from a frozen copy of the starting
 * adapter, evaluated per batch, so nothing but two adapters stays in memory.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs"
import { Schema } from "effect"
import { encodePrompt } from "@moa/model"
import {
  Adapter,
  AdapterError,
  completionBatch,
  completionLoss,
  encodeRow,
  groupAdvantages,
  gae,
  grpoConfig,
  grpoLoss,
  ktoConfig,
  logpsAndValues,
  makeBatch,
  pairwiseConfig,
  ppoConfig,
  ppoLoss,
  ppoRewards,
  PreferenceConfigError,
  PreferenceDataError,
  precomputeLabelledReference,
  precomputePairReference,
  tokenLogps,
  trainDPO,
  trainKTO,
  type PairwiseAlgo,
  type TokenLabelled,
  type TokenCompletion,
  type TokenPair,
  ValueHead,
} from "@moa/tune"
import { moaError, MoaError } from "@moa/protocol"
import { checkAdapterName, type AdapterStore } from "./adapters.ts"
import type { Engine } from "./engine.ts"

export const TrainAlgorithms = ["sft", "dpo", "ipo", "simpo", "orpo", "kto", "grpo", "ppo"] as const
export type TrainAlgorithm = (typeof TrainAlgorithms)[number]

const SftItem = Schema.Struct({ prompt: Schema.String, completion: Schema.String })
const PairItem = Schema.Struct({ prompt: Schema.String, chosen: Schema.String, rejected: Schema.String })
const LabelledItem = Schema.Struct({ prompt: Schema.String, completion: Schema.String, label: Schema.Boolean })
const GroupItem = Schema.Struct({ prompt: Schema.String, completions: Schema.Array(Schema.String), rewards: Schema.Array(Schema.Number) })
const RolloutItem = Schema.Struct({ prompt: Schema.String, completion: Schema.String, reward: Schema.Number })

export const LoraSpec = Schema.Struct({
  r: Schema.optional(Schema.Int.pipe(Schema.positive())),
  alpha: Schema.optional(Schema.Number.pipe(Schema.positive())),
  dropout: Schema.optional(Schema.Number.pipe(Schema.between(0, 0.99))),
  dora: Schema.optional(Schema.Boolean),
  rslora: Schema.optional(Schema.Boolean),
  /** tune's patterns: q, k, v, o, mlp_in, mlp_out, all, full names */
  targetModules: Schema.optional(Schema.Array(Schema.String)),
})

export const TrainRequest = Schema.Struct({
  /** Adapter to train a new version of (created when it does not exist yet). */
  adapter: Schema.String,
  /** Version to start from: a version id, "current" (default) or "new" (a fresh adapter). */
  baseVersion: Schema.optional(Schema.String),
  algorithm: Schema.String,
  /** Training data inline; its shape depends on the algorithm (see docs/expert.md). */
  data: Schema.Array(Schema.Unknown),
  /**
   * Hyper-parameters. sft: steps, batchSize, lr, maxGradNorm, seed. Preference algorithms: their
   * tune config fields (learningRate, batchSize, maxSteps, numEpochs, beta, lossType, …).
   */
  hyper: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  /** Shape of a fresh adapter (baseVersion "new", or an adapter that does not exist yet). */
  lora: Schema.optional(LoraSpec),
  /** Make the new version current when done (default false: the coordinator evaluates first). */
  promote: Schema.optional(Schema.Boolean),
  /** Caller's id for the job, echoed back (e.g. the JetStream message id). */
  jobId: Schema.optional(Schema.String),
})
export type TrainRequest = typeof TrainRequest.Type

export const TrainResponse = Schema.Struct({
  jobId: Schema.optional(Schema.String),
  adapter: Schema.String,
  version: Schema.String,
  baseVersion: Schema.String,
  algorithm: Schema.String,
  promoted: Schema.Boolean,
  steps: Schema.Int,
  /** loss after each step */
  losses: Schema.Array(Schema.Number),
  /** other per-step metrics of the objective (rewards/margins, …), averaged over the job */
  metrics: Schema.Record({ key: Schema.String, value: Schema.Number }),
  examples: Schema.Int,
  timings: Schema.Struct({ totalMs: Schema.Number, trainMs: Schema.Number, saveMs: Schema.Number, stepMsMean: Schema.Number }),
  dir: Schema.String,
  /** Object Store names of the new version's files (bucket moa_weights_<cluster>), when the expert could put them there */
  objects: Schema.optional(Schema.Array(Schema.String)),
})
export type TrainResponse = typeof TrainResponse.Type

const bad = (message: string, field: string) => moaError("BAD_REQUEST", message, { field })

const decodeItems = <A, I>(schema: Schema.Schema<A, I, never>, data: ReadonlyArray<unknown>, shape: string): A[] =>
  data.map((d, i) => {
    const r = Schema.decodeUnknownEither(schema)(d)
    if (r._tag === "Left") throw bad(`data[${i}] is not ${shape}: ${r.left.message.split("\n").slice(-1)[0]?.trim()}`, `data.${i}`)
    return r.right
  })

interface Hyper {
  get<T>(key: string, dflt: T, check: (v: unknown) => boolean, what: string): T
  rest(): Record<string, unknown>
}
const hyperOf = (h: Record<string, unknown> | undefined): Hyper => {
  const given = { ...(h ?? {}) }
  return {
    get(key, dflt, check, what) {
      if (!(key in given)) return dflt
      const v = given[key]
      delete given[key]
      if (!check(v)) throw bad(`hyper.${key} must be ${what}, got ${JSON.stringify(v)}`, `hyper.${key}`)
      return v as never
    },
    rest: () => given,
  }
}
const isPosInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0
const isPosNum = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v > 0
const isNonNeg = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v >= 0

/**
 * One optimizer step: loss → gradients over `vars` (and `critic.vars`) → one global-norm clipping
 * over all of them → update (the critic's variables with its own optimizer). Returns loss and metrics.
 */
function step(
  optimizer: tf.Optimizer,
  vars: tf.Variable[],
  clip: number,
  lossFn: () => { loss: tf.Scalar; metrics?: Record<string, tf.Scalar> },
  critic?: { optimizer: tf.Optimizer; vars: tf.Variable[] },
): Record<string, number> {
  let kept: Record<string, tf.Scalar> = {}
  const { value, grads } = tf.variableGrads(() => {
    const out = lossFn()
    kept = Object.fromEntries(Object.entries(out.metrics ?? {}).map(([k, v]) => [k, tf.keep(v)]))
    return out.loss
  }, [...vars, ...(critic?.vars ?? [])])
  tf.tidy(() => {
    const names = Object.keys(grads)
    const norm = Math.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(grads[n])))).dataSync()[0])
    const scale = clip > 0 && norm > clip ? clip / (norm + 1e-6) : 1
    const scaled = (ns: string[]) => Object.fromEntries(ns.map((n) => [n, scale === 1 ? grads[n] : tf.mul(grads[n], scale)]))
    const criticNames = new Set(critic?.vars.map((v) => v.name) ?? [])
    const actor = names.filter((n) => !criticNames.has(n))
    if (actor.length > 0) optimizer.applyGradients(scaled(actor))
    if (critic && criticNames.size > 0) critic.optimizer.applyGradients(scaled(names.filter((n) => criticNames.has(n))))
  })
  tf.dispose(grads)
  const metrics: Record<string, number> = { loss: value.dataSync()[0] }
  value.dispose()
  for (const [k, v] of Object.entries(kept)) {
    metrics[k] = v.dataSync()[0]
    v.dispose()
  }
  if (!Number.isFinite(metrics.loss)) throw bad(`the loss became ${metrics.loss}; lower the learning rate`, "hyper")
  return metrics
}

/**
 * π_old for an offline job: each item's per-token log-probs of its own completion tokens under the
 * model with the starting version active (activated again after each yield), taken once, in chunks, without
 * gradient. The caller sampled these completions from that version, and a job reuses them for many
 * steps, so — as TRL does whenever a generation batch serves more than one step — the ratio
 * ρ = π/π_old moves away from 1 and the clip bounds how far the job pushes each sample. (Taking
 * π_old = π detached at every step made ρ ≡ 1 for ever: an unclipped policy gradient over stale
 * samples, which drove the log-probs of the wrong answers down without bound and collapsed the
 * expert: 32.6% → 6.5% held-out on sort.)
 */
async function startingLogps(engine: Engine, items: ReadonlyArray<TokenCompletion>, ctx: number, temperature: number, start: Adapter, chunk = 32): Promise<number[][]> {
  const model = engine.model
  const out: number[][] = []
  for (let i = 0; i < items.length; i += chunk) {
    if (i > 0) await engine.yield() // thousands of rollouts: keep answering generate and $SRV.STATS meanwhile
    engine.activate(start)
    const part = items.slice(i, i + chunk)
    const b = completionBatch([...part], ctx, "sample")
    try {
      const lp = tf.tidy(() => tokenLogps(model, b, temperature)) // [n,L]
      const rows = lp.arraySync() as number[][]
      lp.dispose()
      // the completion's tokens sit at positions prompt−1 … prompt−1+len−1
      part.forEach((it, j) => out.push(rows[j]!.slice(it.prompt.length - 1, it.prompt.length - 1 + it.completion.length)))
    } finally {
      tf.dispose([b.ids, b.targets, b.mask])
    }
  }
  return out
}

/** Per-item completion log-probs laid out [B,L] like completionBatch(items) lays out its mask. */
function layoutLogps(items: ReadonlyArray<TokenCompletion>, perItem: ReadonlyArray<ReadonlyArray<number>>, L: number): tf.Tensor2D {
  const rows = items.map((it, b) => {
    const row = new Array<number>(L).fill(0)
    perItem[b]!.forEach((v, t) => (row[it.prompt.length - 1 + t] = v))
    return row
  })
  return tf.tensor2d(rows, [items.length, L])
}

/** Seeded shuffled batches of indices, epoch after epoch. */
function* batchOrder(n: number, batchSize: number, seed: number): Generator<number[]> {
  let s = (seed >>> 0) + 1
  const r = () => ((s = (s * 1664525 + 1013904223) >>> 0), s / 2 ** 32)
  for (;;) {
    const order = Array.from({ length: n }, (_, i) => i)
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1))
      ;[order[i], order[j]] = [order[j], order[i]]
    }
    for (let i = 0; i < n; i += batchSize) yield order.slice(i, i + batchSize)
  }
}

/** Runs training jobs one at a time on the engine's model. */
export class Trainer {
  private busy: string | undefined
  jobsDone = 0

  constructor(
    private readonly engine: Engine,
    private readonly store: AdapterStore,
    private readonly fingerprint: string,
    private readonly log: (msg: string, data?: Record<string, unknown>) => void = () => {},
  ) {}

  get running(): string | undefined {
    return this.busy
  }

  /**
   * Run a job. A job with a `jobId` is idempotent: asked again while it runs, the second caller
   * waits for the same result (a coordinator that was restarted mid-job re-sends it); asked again
   * after it finished, the saved version's summary is returned instead of training twice.
   */
  async run(req: TrainRequest, opts: { signal?: AbortSignal; takenVersions?: ReadonlyArray<string> } = {}): Promise<TrainResponse> {
    if (req.jobId === undefined) return this.train(req, opts)
    const running = this.byJob.get(req.jobId)
    if (running) return running
    const done = this.finished(req.adapter, req.jobId)
    if (done) return done
    const p = this.train(req, opts).finally(() => this.byJob.delete(req.jobId!))
    this.byJob.set(req.jobId, p)
    return p
  }
  private readonly byJob = new Map<string, Promise<TrainResponse>>()

  /** The summary of a version a job with this id already saved (`<adapter>/<version>.json`), if any. */
  private finished(adapter: string, jobId: string): TrainResponse | undefined {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(adapter)) return undefined
    const dir = path.join(this.store.adaptersDir, adapter)
    if (!fs.existsSync(dir)) return undefined
    for (const f of fs.readdirSync(dir)) {
      if (!f.endsWith(".json")) continue
      try {
        const s = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")) as Record<string, unknown>
        if (s.jobId !== jobId || typeof s.version !== "string" || !/^v\d+$/.test(s.version)) continue
        // the version's folder, not its registration: a rollback to the base unregisters the adapter
        const vdir = path.join(dir, s.version)
        if (!fs.existsSync(path.join(vdir, "adapter_config.json"))) continue
        const r = Schema.decodeUnknownEither(TrainResponse)(s, { onExcessProperty: "ignore" })
        if (r._tag !== "Right") continue
        if (!this.store.hasVersion(adapter, s.version)) this.store.addVersion(adapter, s.version, vdir, false)
        return r.right
      } catch {
        // not a summary
      }
    }
    return undefined
  }

  private async train(req: TrainRequest, opts: { signal?: AbortSignal; takenVersions?: ReadonlyArray<string> }): Promise<TrainResponse> {
    const t0 = performance.now()
    // ---- validate at the boundary, before touching the model
    const name = checkAdapterName(req.adapter, "adapter")
    if (!(TrainAlgorithms as ReadonlyArray<string>).includes(req.algorithm))
      throw bad(`unknown algorithm ${JSON.stringify(req.algorithm)}; use one of ${TrainAlgorithms.join(", ")}`, "algorithm")
    const algo = req.algorithm as TrainAlgorithm
    if (req.data.length === 0) throw bad("data is empty; a training job needs at least one example", "data")
    if (this.busy) throw moaError("OVERLOADED", `a training job (${this.busy}) is already running on this replica; retry when it is done`)
    const baseRef = req.baseVersion ?? "current"
    let baseVersion = "new"
    let baseDir: string | undefined
    if (baseRef !== "new") {
      if (!this.store.has(name)) {
        if (req.baseVersion !== undefined && req.baseVersion !== "current")
          throw moaError("NOT_FOUND", `unknown adapter "${name}", so it has no version "${baseRef}"; start a new one with baseVersion "new"`, { field: "baseVersion" })
      } else {
        const r = this.store.resolve(baseRef === "current" ? name : `${name}@${baseRef}`, "baseVersion")
        baseVersion = r.version
        baseDir = r.dir
      }
    }
    const model = this.engine.model
    const tok = this.engine.tokenizer
    const ctx = model.config.contextLength
    const hyper = hyperOf(req.hyper as Record<string, unknown> | undefined)

    this.busy = `${name} ${algo}${req.jobId ? ` ${req.jobId}` : ""}`
    let policy: Adapter | undefined
    let reference: Adapter | undefined
    let critic: ValueHead | undefined
    try {
      // ---- build the job: data, adapters, per-step function
      const fresh = () => {
        try {
          return Adapter.create(model, { r: req.lora?.r ?? 8, alpha: req.lora?.alpha ?? 16, dropout: req.lora?.dropout ?? 0, dora: req.lora?.dora ?? false, rslora: req.lora?.rslora ?? false, targetModules: req.lora?.targetModules ?? ["q", "v"], seed: 1 }, { name: this.engine.modelName, fingerprint: this.fingerprint })
        } catch (e) {
          throw bad((e as Error).message, "lora")
        }
      }
      const loadBase = () => {
        try {
          return baseDir ? Adapter.load(baseDir, model, { fingerprint: this.fingerprint }) : fresh()
        } catch (e) {
          if (e instanceof AdapterError) throw bad(e.message, "baseVersion")
          throw e
        }
      }
      const pre = () => {
        this.engine.activate(policy)
      }

      /** One optimizer step on the examples `idx`; `s` is the job's step index (0-based). */
      let stepFn: (idx: number[], s: number) => Promise<Record<string, number>>
      let n = req.data.length
      let steps: number
      let batchSize: number
      let seed: number
      const wrap = (e: unknown): never => {
        if (e instanceof MoaError) throw e
        if (e instanceof PreferenceConfigError) throw bad(e.message, `hyper.${e.field}`)
        if (e instanceof PreferenceDataError) throw bad(e.message, "data")
        throw e
      }
      policy = loadBase()
      const vars = policy.variables()

      if (algo === "sft") {
        const items = decodeItems(SftItem, req.data, "{ prompt, completion }")
        const rows = items.map((it, i) => {
          try {
            return encodeRow(tok, it, ctx)
          } catch (e) {
            throw bad((e as Error).message, `data.${i}`)
          }
        })
        steps = hyper.get("steps", 20, isPosInt, "a positive integer")
        batchSize = hyper.get("batchSize", Math.min(16, rows.length), isPosInt, "a positive integer")
        const lr = hyper.get("lr", 1e-2, isPosNum, "a positive number")
        const clip = hyper.get("maxGradNorm", 1, isNonNeg, "a number ≥ 0")
        seed = hyper.get("seed", 0, Number.isInteger, "an integer")
        const extra = Object.keys(hyper.rest())
        if (extra.length) throw bad(`unknown sft hyper-parameter ${extra.map((k) => `"${k}"`).join(", ")}; known: steps, batchSize, lr, maxGradNorm, seed`, `hyper.${extra[0]}`)
        const opt = tf.train.adam(lr)
        stepFn = async (idx) => {
          pre()
          policy!.training = true
          try {
            const batch = makeBatch(idx.map((i) => rows[i]), tok.pad)
            return step(opt, vars, clip, () => ({ loss: completionLoss(model, batch, true, seed * 100003 + idx[0]) }))
          } finally {
            policy!.training = false
          }
        }
      } else if (algo === "dpo" || algo === "ipo" || algo === "simpo" || algo === "orpo") {
        const items = decodeItems(PairItem, req.data, "{ prompt, chosen, rejected }")
        const pairs: TokenPair[] = items.map((p) => ({ prompt: encodePrompt(tok, p.prompt), chosen: [...tok.encode(p.chosen), tok.eos], rejected: [...tok.encode(p.rejected), tok.eos] }))
        let cfg: ReturnType<typeof pairwiseConfig>
        try {
          cfg = pairwiseConfig(algo as PairwiseAlgo, hyper.rest())
        } catch (e) {
          return wrap(e)
        }
        batchSize = Math.min(cfg.batchSize, pairs.length)
        steps = cfg.maxSteps > 0 ? cfg.maxSteps : cfg.numEpochs * Math.ceil(pairs.length / batchSize)
        seed = cfg.seed
        const needsRef = cfg.algo === "dpo" && !cfg.referenceFree
        if (needsRef) reference = loadBase()
        const opt = tf.train.adam(cfg.learningRate)
        stepFn = async (idx) => {
          const batch = idx.map((i) => pairs[i])
          let ref
          if (reference) {
            this.engine.activate(reference)
            ref = precomputePairReference(model, batch, { batchSize: batch.length }).values
          }
          pre()
          try {
            // tune's trainers may yield before their step: serving borrows the hook and restores `policy`
            const r = await trainDPO(model, batch, { ...cfg, batchSize: batch.length, maxSteps: 1 }, vars, { optimizer: opt, ...(ref ? { reference: ref } : {}) })
            return r.history[0]
          } catch (e) {
            return wrap(e)
          }
        }
      } else if (algo === "kto") {
        const items = decodeItems(LabelledItem, req.data, "{ prompt, completion, label }")
        const ex: TokenLabelled[] = items.map((p) => ({ prompt: encodePrompt(tok, p.prompt), completion: [...tok.encode(p.completion), tok.eos], label: p.label }))
        if (ex.length < 2) throw bad("kto needs at least 2 examples (its KL estimate pairs each prompt with another example's completion)", "data")
        let cfg: ReturnType<typeof ktoConfig>
        try {
          cfg = ktoConfig(hyper.rest() as never)
        } catch (e) {
          return wrap(e)
        }
        batchSize = Math.max(2, Math.min(cfg.batchSize, ex.length))
        steps = cfg.maxSteps > 0 ? cfg.maxSteps : cfg.numEpochs * Math.ceil(ex.length / batchSize)
        seed = cfg.seed
        reference = loadBase()
        const opt = tf.train.adam(cfg.learningRate)
        stepFn = async (idxIn) => {
          // KTO's KL term needs ≥ 2 rows per batch
          const idx = idxIn.length >= 2 ? idxIn : [...idxIn, (idxIn[0] + 1) % ex.length]
          const batch = idx.map((i) => ex[i])
          this.engine.activate(reference)
          const ref = precomputeLabelledReference(model, batch, batch.length, { batchSize: batch.length }).values
          pre()
          try {
            return (await trainKTO(model, batch, { ...cfg, batchSize: batch.length, maxSteps: 1 }, vars, { optimizer: opt, reference: ref })).history[0]
          } catch (e) {
            return wrap(e)
          }
        }
      } else if (algo === "grpo") {
        // grpo, offline: groups sampled and scored by the caller
        const groups = decodeItems(GroupItem, req.data, "{ prompt, completions[], rewards[] }")
        const G = groups[0].completions.length
        groups.forEach((g, i) => {
          if (g.completions.length < 2) throw bad(`data[${i}] has ${g.completions.length} completions; a GRPO group needs at least 2`, `data.${i}.completions`)
          if (g.completions.length !== G) throw bad(`data[${i}] has ${g.completions.length} completions but data[0] has ${G}; all groups must have the same size`, `data.${i}.completions`)
          if (g.rewards.length !== G) throw bad(`data[${i}] has ${g.rewards.length} rewards for ${G} completions`, `data.${i}.rewards`)
          const r = g.rewards.findIndex((x) => !Number.isFinite(x))
          if (r >= 0) throw bad(`data[${i}].rewards[${r}] is not a finite number`, `data.${i}.rewards.${r}`)
        })
        let cfg: ReturnType<typeof grpoConfig>
        try {
          cfg = grpoConfig({ numGenerations: G, ...(hyper.rest() as object) })
        } catch (e) {
          return wrap(e)
        }
        if (cfg.numGenerations !== G) throw bad(`hyper.numGenerations is ${cfg.numGenerations} but the groups have ${G} completions`, "hyper.numGenerations")
        const samples = groups.map((g) => ({
          prompt: encodePrompt(tok, g.prompt),
          completions: g.completions.map((c) => [...tok.encode(c), tok.eos]),
          rewards: g.rewards,
        }))
        samples.forEach((s, i) => {
          const longest = Math.max(...s.completions.map((c) => c.length))
          if (s.prompt.length + longest - 1 > ctx) throw bad(`data[${i}]: prompt + longest completion exceed the model's context of ${ctx}`, `data.${i}`)
        })
        batchSize = Math.min(cfg.batchSize, samples.length)
        steps = cfg.maxSteps > 0 ? cfg.maxSteps : cfg.numEpochs * Math.ceil(samples.length / batchSize)
        seed = cfg.seed
        if (cfg.beta > 0) reference = loadBase()
        const opt = tf.train.adam(cfg.learningRate)
        const itemsOf = (idx: number[]) => idx.flatMap((i) => samples[i].completions.map((c) => ({ prompt: samples[i].prompt, completion: c })))
        // π_old of every completion, from the starting version, once (see startingLogps)
        const oldTok = await startingLogps(this.engine, itemsOf(samples.map((_, i) => i)), ctx, cfg.temperature, policy) // groups are consecutive runs of G
        const oldOf = (idx: number[], L: number): tf.Tensor2D =>
          layoutLogps(itemsOf(idx), idx.flatMap((i) => oldTok.slice(i * G, (i + 1) * G)), L)
        stepFn = async (idx) => {
          const items = itemsOf(idx)
          const rewards = idx.flatMap((i) => samples[i].rewards)
          const batch = completionBatch(items, ctx, "sample")
          try {
            let refLogps: tf.Tensor2D | undefined
            if (reference) {
              this.engine.activate(reference)
              refLogps = tf.tidy(() => tokenLogps(model, batch, cfg.temperature))
            }
            pre()
            const old = oldOf(idx, batch.ids.shape[1])
            const adv = groupAdvantages(tf.tensor1d(rewards), G, cfg.scaleRewards)
            let m: Record<string, number> = {}
            for (let k = 0; k < cfg.numIterations; k++)
              m = step(opt, vars, cfg.maxGradNorm, () => grpoLoss({ logps: tokenLogps(model, batch, cfg.temperature), oldLogps: old, refLogps, mask: batch.mask, advantages: adv.advantages }, cfg))
            for (const [k, v] of Object.entries(adv.metrics)) m[k] = v.dataSync()[0]
            tf.dispose([adv.advantages, ...Object.values(adv.metrics), old, ...(refLogps ? [refLogps] : [])])
            return m
          } finally {
            tf.dispose([batch.ids, batch.targets, batch.mask])
          }
        }
        n = samples.length
      } else {
        // ppo over rollouts the caller sampled from the starting version and scored
        const items = decodeItems(RolloutItem, req.data, "{ prompt, completion, reward }")
        items.forEach((it, i) => {
          if (!Number.isFinite(it.reward)) throw bad(`data[${i}].reward is not a finite number`, `data.${i}.reward`)
        })
        // OpenRLHF's freezing_actor_steps: the fresh critic learns alone first, so the first
        // policy steps do not follow the advantages of a random value head
        const freezing = hyper.get("freezingActorSteps", 0, (v) => Number.isInteger(v) && (v as number) >= 0, "an integer ≥ 0")
        const criticLr = hyper.get<number | undefined>("criticLearningRate", undefined, isPosNum, "a positive number")
        // the critic reads the trunk's hidden states; detached, its loss does not move the adapter
        const detachValueHead = hyper.get("detachValueHead", false, (v) => typeof v === "boolean", "true or false")
        let cfg: ReturnType<typeof ppoConfig>
        try {
          cfg = ppoConfig(hyper.rest() as never)
        } catch (e) {
          return wrap(e)
        }
        const rollouts: TokenCompletion[] = items.map((it) => ({ prompt: encodePrompt(tok, it.prompt), completion: [...tok.encode(it.completion), tok.eos] }))
        rollouts.forEach((r, i) => {
          if (r.prompt.length + r.completion.length - 1 > ctx) throw bad(`data[${i}]: prompt + completion exceed the model's context of ${ctx}`, `data.${i}`)
        })
        const scores = items.map((it) => it.reward)
        batchSize = Math.min(cfg.batchSize, rollouts.length)
        steps = cfg.maxSteps > 0 ? cfg.maxSteps : cfg.numEpochs * Math.ceil(rollouts.length / batchSize)
        seed = cfg.seed
        // π_old, once, from the starting version (see startingLogps). The rollouts came from that
        // version, which is also the reference, so the reward's KL term is 0 here: the clip (and
        // the round's promotion gate) keeps the new version near the old one.
        const old = await startingLogps(this.engine, rollouts, ctx, cfg.temperature, policy)
        const valueHead = new ValueHead(model.config.dModel, cfg.seed, { detachTrunk: detachValueHead })
        critic = valueHead
        const opt = tf.train.adam(cfg.learningRate)
        const criticStep = { optimizer: tf.train.adam(criticLr ?? cfg.learningRate), vars: valueHead.variables() }
        stepFn = async (idx, s) => {
          const rows = idx.map((i) => rollouts[i]!)
          const batch = completionBatch(rows, ctx, "rollout")
          const oldLp = layoutLogps(rows, idx.map((i) => old[i]!), batch.ids.shape[1]) // [B,L]
          try {
            pre()
            // the rollouts' statistics under the critic as it is now, no gradient: per-token
            // rewards (the score on the last token), GAE advantages (whitened) and returns
            const roll = tf.tidy(() => {
              const { values } = logpsAndValues(model, valueHead, batch, cfg.temperature) // [B,L]
              const r = ppoRewards({ logps: oldLp, refLogps: oldLp, mask: batch.mask, scores: tf.tensor1d(idx.map((i) => scores[i]!)) }, cfg)
              const { advantages, returns } = gae({ rewards: r.rewards, values, mask: batch.mask }, cfg) // [B,L] each
              return { values, advantages, returns }
            })
            const actorVars = s < freezing ? [] : vars
            let m: Record<string, number> = {}
            for (let e = 0; e < cfg.numPpoEpochs; e++)
              m = step(
                opt,
                actorVars,
                cfg.maxGradNorm,
                () => {
                  const cur = logpsAndValues(model, valueHead, batch, cfg.temperature)
                  return ppoLoss({ logps: cur.logps, oldLogps: oldLp, advantages: roll.advantages, mask: batch.mask, values: cur.values, oldValues: roll.values, returns: roll.returns }, cfg)
                },
                criticStep,
              )
            tf.dispose([roll.values, roll.advantages, roll.returns])
            m["objective/scores"] = idx.reduce((a, i) => a + scores[i]!, 0) / idx.length
            return m
          } finally {
            tf.dispose([batch.ids, batch.targets, batch.mask, oldLp])
          }
        }
      }

      // ---- train, yielding between steps
      const tTrain = performance.now()
      const losses: number[] = []
      const sums: Record<string, number> = {}
      const order = batchOrder(n, batchSize, seed)
      this.log("training", { adapter: name, algorithm: algo, baseVersion, steps, examples: req.data.length, preparedMs: Math.round(tTrain - t0) })
      let lastReport = tTrain
      for (let s = 0; s < steps; s++) {
        if (opts.signal?.aborted) throw moaError("CANCELLED", `training job cancelled after ${s} of ${steps} steps (nothing saved)`)
        const m = await stepFn(order.next().value as number[], s)
        losses.push(m.loss)
        for (const [k, v] of Object.entries(m)) if (k !== "loss" && Number.isFinite(v)) sums[k] = (sums[k] ?? 0) + v
        // progress in the agent's log at most every 10 s: step, loss, speed, time left
        const now = performance.now()
        if (now - lastReport >= 10_000 && s + 1 < steps) {
          lastReport = now
          const perStep = (now - tTrain) / (s + 1)
          this.log("progress", { adapter: name, algorithm: algo, step: s + 1, steps, loss: Number(m.loss.toFixed(4)), stepsPerS: Number((1000 / perStep).toFixed(2)), etaS: Math.round((perStep * (steps - s - 1)) / 1000) })
        }
        await this.engine.yield()
      }
      const trainMs = performance.now() - tTrain

      // ---- save atomically as a new version
      const tSave = performance.now()
      const version = this.store.nextVersion(name, opts.takenVersions)
      const dir = path.join(this.store.adaptersDir, name, version)
      policy.save(dir)
      const promoted = req.promote === true || baseVersion === "new" && !this.store.has(name)
      const response: { -readonly [K in keyof TrainResponse]: TrainResponse[K] } = {
        ...(req.jobId ? { jobId: req.jobId } : {}),
        adapter: name,
        version,
        baseVersion,
        algorithm: algo,
        promoted,
        steps,
        losses,
        metrics: Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / steps])),
        examples: req.data.length,
        timings: { totalMs: 0, trainMs, saveMs: 0, stepMsMean: trainMs / steps },
        dir,
      }
      fs.writeFileSync(path.join(this.store.adaptersDir, name, `${version}.json`), JSON.stringify({ ...response, at: new Date().toISOString(), hyper: req.hyper ?? {}, lora: req.lora ?? {} }, null, 2) + "\n")
      this.store.addVersion(name, version, dir, promoted)
      response.timings = { ...response.timings, saveMs: performance.now() - tSave, totalMs: performance.now() - t0 }
      this.jobsDone++
      this.log("trained", { adapter: name, version, steps, loss: losses.at(-1), ms: Math.round(response.timings.totalMs) })
      return response
    } finally {
      this.busy = undefined
      critic?.dispose()
      for (const a of [policy, reference]) {
        if (!a) continue
        this.engine.forget(a)
        a.dispose()
      }
    }
  }
}
