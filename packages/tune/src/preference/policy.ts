// What the preference trainers need from a model, and the token-level plumbing around it:
// batches of (prompt, completion) token ids, per-token log-probs, sampling, the optimizer step.
// Written against the model contract (notes/model-contract.md): `forward(ids) → logits [B,T,V]`
// and `params: Map<string, tf.Variable>`; any object with those two members works.
import * as tf from "@tensorflow/tfjs"
import { rng } from "@moa/model"

/** The part of @moa/model's GPT the trainers use. */
export interface PolicyModel {
  forward(ids: tf.Tensor2D, opts?: { training?: boolean }): tf.Tensor
  params: Map<string, tf.Variable>
  config?: { contextLength?: number; vocabSize?: number }
}

/** A prompt and one completion, as token ids. */
export interface TokenCompletion {
  prompt: number[]
  completion: number[]
}

/** TRL's prompt/chosen/rejected shape, as token ids. */
export interface TokenPair {
  prompt: number[]
  chosen: number[]
  rejected: number[]
}

/** TRL's prompt/completion/label shape, as token ids. */
export interface TokenLabelled extends TokenCompletion {
  label: boolean
}

/** Anything with `encode(text) → ids` (the model package's tokenizer). */
export interface Encoder {
  encode(text: string): number[]
}

/** A tokenizer for TRL's text datasets: @moa/model's Tokenizer fits (bos/eos are its special ids). */
export interface TextTokenizer extends Encoder {
  readonly bos?: number
  readonly eos?: number
}

export interface EncodeOptions {
  /** Prepended to every prompt (default: tokenizer.bos when it has one). */
  bos?: number
  /** Appended to every completion (default: tokenizer.eos when it has one). */
  eos?: number
  /** Token ids put between the prompt and the completion (e.g. [tokenizer.sep]); default none. */
  separator?: number[]
}

function encoders(tok: TextTokenizer, o: EncodeOptions) {
  const bos = o.bos ?? tok.bos
  const eos = o.eos ?? tok.eos
  const sep = o.separator ?? []
  const str = (v: unknown, field: string, i: number): string => {
    if (typeof v !== "string") throw new PreferenceDataError(`record ${i}: "${field}" must be a string, got ${JSON.stringify(v)}`)
    return v
  }
  return {
    prompt: (v: unknown, i: number) => [...(bos !== undefined ? [bos] : []), ...tok.encode(str(v, "prompt", i)), ...sep],
    completion: (v: unknown, field: string, i: number) => [...tok.encode(str(v, field, i)), ...(eos !== undefined ? [eos] : [])],
  }
}

/** TRL's prompt/chosen/rejected text records → token pairs. */
export function encodePreference(records: ReadonlyArray<{ prompt: string; chosen: string; rejected: string }>, tok: TextTokenizer, o: EncodeOptions = {}): TokenPair[] {
  const e = encoders(tok, o)
  return records.map((r, i) => ({ prompt: e.prompt(r.prompt, i), chosen: e.completion(r.chosen, "chosen", i), rejected: e.completion(r.rejected, "rejected", i) }))
}

/** TRL's prompt/completion/label text records → labelled token completions (for KTO). */
export function encodeUnpaired(records: ReadonlyArray<{ prompt: string; completion: string; label: boolean }>, tok: TextTokenizer, o: EncodeOptions = {}): TokenLabelled[] {
  const e = encoders(tok, o)
  return records.map((r, i) => {
    if (typeof r.label !== "boolean") throw new PreferenceDataError(`record ${i}: "label" must be true or false, got ${JSON.stringify(r.label)}`)
    return { prompt: e.prompt(r.prompt, i), completion: e.completion(r.completion, "completion", i), label: r.label }
  })
}

/** TRL's prompt-only records (or plain strings) → prompt token ids (for GRPO/PPO). */
export function encodePrompts(records: ReadonlyArray<{ prompt: string } | string>, tok: TextTokenizer, o: EncodeOptions = {}): number[][] {
  const e = encoders(tok, o)
  return records.map((r, i) => e.prompt(typeof r === "string" ? r : r.prompt, i))
}

/** A padded batch: the model reads `ids`, predicts `targets`; `mask` is 1 where the target is a completion token. */
export interface CompletionBatch {
  ids: tf.Tensor2D // [B,L] int32
  targets: tf.Tensor2D // [B,L] int32
  mask: tf.Tensor2D // [B,L] float32
}

export class PreferenceDataError extends Error {
  override readonly name = "PreferenceDataError"
}

/**
 * Lay out prompt ++ completion for teacher forcing: ids = seq[0..n−2], targets = seq[1..n−1],
 * mask = 1 on the positions whose target is a completion token. Right-padded with 0.
 */
export function completionBatch(items: TokenCompletion[], contextLength?: number, what = "example"): CompletionBatch {
  if (items.length === 0) throw new PreferenceDataError(`completionBatch: no ${what}s in the batch; pass at least one`)
  items.forEach((it, i) => checkItem(it, i, contextLength, what))
  const L = Math.max(...items.map((it) => it.prompt.length + it.completion.length - 1))
  const B = items.length
  const ids = new Int32Array(B * L)
  const targets = new Int32Array(B * L)
  const mask = new Float32Array(B * L)
  items.forEach((it, b) => {
    const seq = [...it.prompt, ...it.completion]
    for (let t = 0; t < seq.length - 1; t++) {
      ids[b * L + t] = seq[t]
      targets[b * L + t] = seq[t + 1]
      mask[b * L + t] = t >= it.prompt.length - 1 ? 1 : 0
    }
  })
  return {
    ids: tf.tensor2d(ids, [B, L], "int32"),
    targets: tf.tensor2d(targets, [B, L], "int32"),
    mask: tf.tensor2d(mask, [B, L], "float32"),
  }
}

function checkItem(it: TokenCompletion, i: number, contextLength: number | undefined, what: string) {
  const ok = (xs: unknown) => Array.isArray(xs) && xs.every((x) => Number.isInteger(x) && x >= 0)
  if (!ok(it.prompt) || it.prompt.length === 0)
    throw new PreferenceDataError(`${what} ${i}: prompt must be a non-empty array of token ids (the model needs a token to condition on; prepend a BOS token)`)
  if (!ok(it.completion) || it.completion.length === 0)
    throw new PreferenceDataError(`${what} ${i}: completion must be a non-empty array of token ids`)
  const n = it.prompt.length + it.completion.length - 1
  if (contextLength !== undefined && n > contextLength)
    throw new PreferenceDataError(
      `${what} ${i}: prompt (${it.prompt.length}) + completion (${it.completion.length}) needs ${n} positions but the model's context is ${contextLength}; shorten it or drop it`,
    )
}

/** Per-token log π(target | prefix) [B,L], zero outside the mask. Differentiable w.r.t. the model's variables. */
export function tokenLogps(model: PolicyModel, batch: CompletionBatch, temperature = 1): tf.Tensor2D {
  return tf.tidy(() => {
    let logits = model.forward(batch.ids, { training: false }) as tf.Tensor3D // [B,L,V]
    if (temperature !== 1) logits = tf.div(logits, temperature)
    const V = logits.shape[2]
    const logp = tf.logSoftmax(logits) // [B,L,V]
    const picked = tf.sum(tf.mul(logp, tf.oneHot(batch.targets, V)), 2) // [B,L] (oneHot, not gather: wasm has no gather gradient)
    return tf.mul(picked, batch.mask) as tf.Tensor2D
  })
}

/** Sum (or mean) of completion log-probs per example, as plain numbers, without gradients. */
export function completionLogps(model: PolicyModel, items: TokenCompletion[], batchSize = 32): { sum: number[]; tokens: number[] } {
  const sum: number[] = []
  const tokens: number[] = []
  for (let i = 0; i < items.length; i += batchSize) {
    const chunk = items.slice(i, i + batchSize)
    const [s, n] = tf.tidy(() => {
      const batch = completionBatch(chunk, contextOf(model))
      const lp = tokenLogps(model, batch)
      return [tf.sum(lp, 1), tf.sum(batch.mask, 1)]
    })
    sum.push(...s.dataSync())
    tokens.push(...n.dataSync())
    s.dispose()
    n.dispose()
  }
  return { sum, tokens }
}

export const contextOf = (model: PolicyModel): number | undefined => model.config?.contextLength

/** Seeded PRNG (mulberry32) for shuffling and sampling: the model package's. */
export { rng }

export function shuffled<T>(xs: T[], random: () => number): T[] {
  const out = xs.slice()
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

export interface SampleCompletionsOptions {
  /** Completions per prompt. */
  n: number
  maxTokens: number
  temperature: number
  /** Generation stops at this token (it is kept in the completion). */
  eosTokenId?: number
  random: () => number
}

/**
 * Sample `n` completions of one prompt in lockstep (one batch of n rows, no KV cache: the prompts
 * here are short). Returns the token ids of each completion, cut after EOS.
 */
export function sampleCompletions(model: PolicyModel, prompt: number[], opts: SampleCompletionsOptions): number[][] {
  const ctx = contextOf(model)
  const rows = Array.from({ length: opts.n }, () => [...prompt])
  const done = new Array<boolean>(opts.n).fill(false)
  const out: number[][] = Array.from({ length: opts.n }, () => [])
  for (let step = 0; step < opts.maxTokens && done.some((d) => !d); step++) {
    const probs = tf.tidy(() => {
      const window = rows.map((r) => (ctx !== undefined && r.length > ctx ? r.slice(r.length - ctx) : r))
      const L = window[0].length
      const ids = tf.tensor2d(window.flat(), [opts.n, L], "int32")
      const logits = model.forward(ids, { training: false }) as tf.Tensor3D // [n,L,V]
      const last = tf.squeeze(tf.slice(logits, [0, L - 1, 0], [-1, 1, -1]), [1]) // [n,V]
      return tf.softmax(tf.div(last, opts.temperature))
    })
    const p = probs.arraySync() as number[][]
    probs.dispose()
    for (let i = 0; i < opts.n; i++) {
      const tok = done[i] ? (opts.eosTokenId ?? 0) : sampleIndex(p[i], opts.random)
      rows[i].push(tok)
      if (!done[i]) {
        out[i].push(tok)
        if (opts.eosTokenId !== undefined && tok === opts.eosTokenId) done[i] = true
      }
    }
  }
  return out
}

function sampleIndex(p: number[], random: () => number): number {
  let r = random()
  for (let i = 0; i < p.length; i++) {
    r -= p[i]
    if (r <= 0) return i
  }
  return p.length - 1
}

/** Greedy completion of each prompt (argmax), up to maxTokens or EOS. */
export function greedyCompletions(model: PolicyModel, prompts: number[][], maxTokens: number, eosTokenId?: number): number[][] {
  return prompts.map((prompt) => {
    const seq = [...prompt]
    const out: number[] = []
    const ctx = contextOf(model)
    for (let s = 0; s < maxTokens; s++) {
      const tok = tf.tidy(() => {
        const w = ctx !== undefined && seq.length > ctx ? seq.slice(seq.length - ctx) : seq
        const logits = model.forward(tf.tensor2d([w], [1, w.length], "int32"), { training: false }) as tf.Tensor3D
        return tf.argMax(tf.reshape(tf.slice(logits, [0, w.length - 1, 0], [1, 1, -1]), [-1])).dataSync()[0]
      })
      seq.push(tok)
      out.push(tok)
      if (eosTokenId !== undefined && tok === eosTokenId) break
    }
    return out
  })
}

/** The variables to train: the given list, else every parameter of the model. */
export function resolveTrainable(model: PolicyModel, trainableVars?: tf.Variable[]): tf.Variable[] {
  const vars = trainableVars ?? [...model.params.values()]
  if (vars.length === 0) throw new PreferenceDataError("no trainable variables: pass the adapter's variables, or leave trainableVars out to train every parameter")
  return vars
}

/**
 * One optimizer step on `lossFn` over `vars`, with global-norm clipping. Returns the loss and the
 * metrics the loss reported, as numbers.
 */
export function optimizerStep(
  optimizer: tf.Optimizer,
  vars: tf.Variable[],
  maxGradNorm: number,
  lossFn: () => { loss: tf.Scalar; metrics: Record<string, tf.Scalar> },
): Record<string, number> {
  let kept: Record<string, tf.Scalar> = {}
  const { value, grads } = tf.variableGrads(() => {
    const out = lossFn()
    kept = Object.fromEntries(Object.entries(out.metrics).map(([k, v]) => [k, tf.keep(v)]))
    return out.loss
  }, vars)
  const names = Object.keys(grads)
  let gradNorm = 0
  const clipped = tf.tidy(() => {
    const norm = tf.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(grads[n])))))
    gradNorm = norm.dataSync()[0]
    const scale = maxGradNorm > 0 && gradNorm > maxGradNorm ? maxGradNorm / (gradNorm + 1e-6) : 1
    return Object.fromEntries(names.map((n) => [n, scale === 1 ? grads[n].clone() : tf.mul(grads[n], scale)])) as tf.NamedTensorMap
  })
  optimizer.applyGradients(clipped)
  tf.dispose(clipped)
  tf.dispose(grads)
  const loss = value.dataSync()[0]
  value.dispose()
  const metrics: Record<string, number> = { loss, grad_norm: gradNorm }
  for (const [k, v] of Object.entries(kept)) {
    metrics[k] = v.dataSync()[0]
    v.dispose()
  }
  if (!Number.isFinite(loss)) throw new Error(`preference loss became ${loss}; lower the learning rate or check the reference log-probs`)
  return metrics
}
