// Generation: batched prompts (left-padded) in one forward pass per token, a KV cache,
// greedy / temperature / top-k / top-p sampling, stop sequences, max tokens, and a
// streaming async iterator.

import * as tf from "@tensorflow/tfjs"
import { encodePrompt } from "./data.js"
import { KVCache, type GPT } from "./gpt.js"
import type { Tokenizer } from "./tokenizer.js"
import { rng } from "./train.js"

export interface SampleOptions {
  /** 0 = greedy (default) */
  temperature?: number
  /** keep only the k most likely tokens (0 = off) */
  topK?: number
  /** keep the smallest set of tokens whose probability reaches p (1 = off) */
  topP?: number
  seed?: number
}

export interface GenerateOptions extends SampleOptions {
  maxTokens?: number
  /** stop when the text contains one of these; the stop string is not returned */
  stop?: string[]
  /** stop at the eos token (default true) */
  stopAtEos?: boolean
  /** use the KV cache (default true); false recomputes the whole sequence each token */
  cache?: boolean
  /** text prompts are wrapped as bos + prompt + sep (the training format) unless raw */
  raw?: boolean
  /** on the native backend, decode with the fused native kernel (default true); see GPT ForwardOptions.fused */
  fused?: boolean
}

export type FinishReason = "eos" | "stop" | "length"

export interface Generation {
  text: string
  tokens: number[]
  finishReason: FinishReason
}

/** Pick a token from logits (V) with the given options; `r` is a uniform [0,1) source. */
export function sampleToken(logits: Float32Array | number[], o: SampleOptions, r: () => number): number {
  const V = logits.length
  const temperature = o.temperature ?? 0
  if (temperature <= 0) {
    let best = 0
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i
    return best
  }
  let idx = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b] - logits[a])
  if (o.topK && o.topK > 0) idx = idx.slice(0, o.topK)
  const max = logits[idx[0]]
  let probs = idx.map((i) => Math.exp((logits[i] - max) / temperature))
  let total = probs.reduce((a, b) => a + b, 0)
  const topP = o.topP ?? 1
  if (topP < 1) {
    let acc = 0
    let keep = 0
    while (keep < probs.length && acc < topP * total) acc += probs[keep++]
    idx = idx.slice(0, Math.max(1, keep))
    probs = probs.slice(0, Math.max(1, keep))
    total = probs.reduce((a, b) => a + b, 0)
  }
  let u = r() * total
  for (let k = 0; k < idx.length; k++) {
    u -= probs[k]
    if (u <= 0) return idx[k]
  }
  return idx[idx.length - 1]
}

/**
 * The engine: yields, per step, the next token of every row (undefined once a row is done).
 * Rows are left-padded to a common length and run in one forward pass per step.
 */
export function* generateTokens(
  model: GPT,
  prompts: number[][],
  opts: GenerateOptions & { eos?: number } = {},
): Generator<(number | undefined)[], void, boolean[] | undefined> {
  const B = prompts.length
  if (B === 0) return
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new Error(`generate: prompt ${i} is empty (it needs at least a bos token)`)
  })
  const { contextLength, vocabSize } = model.config
  const L = Math.max(...prompts.map((p) => p.length))
  if (L > contextLength) throw new Error(`generate: a prompt of ${L} tokens does not fit contextLength ${contextLength}`)
  const maxTokens = Math.min(opts.maxTokens ?? 64, contextLength - L)
  const pad = prompts.map((p) => L - p.length)
  const seqs = prompts.map((p, b) => new Array<number>(pad[b]).fill(0).concat(p)) // left-padded
  const done = new Array<boolean>(B).fill(false)
  const r = rng(opts.seed ?? 0)
  const useCache = opts.cache !== false
  const cache = useCache ? new KVCache(model.config.nLayers, pad) : undefined
  try {
    // last-position logits (B, V) of the sequences so far
    const step = (newTokens: number[][]): Float32Array => {
      const T = newTokens[0].length
      const c = cache ?? new KVCache(model.config.nLayers, pad) // uncached: a throw-away cache for the padding
      try {
        const out = tf.tidy(() => {
          const ids = tf.tensor2d(newTokens.flat(), [B, T], "int32")
          const h = model.hidden(ids, { cache: c, fused: opts.fused }) // (B*T, C)
          const last = tf.gather(h, tf.tensor1d(Array.from({ length: B }, (_, b) => b * T + T - 1), "int32")) // (B, C)
          return model.head(last) // (B, V)
        })
        const data = out.dataSync() as Float32Array
        out.dispose()
        return data
      } finally {
        if (!cache) c.dispose()
      }
    }
    let logits = step(seqs)
    for (let n = 0; n < maxTokens; n++) {
      const next: (number | undefined)[] = []
      for (let b = 0; b < B; b++) {
        if (done[b]) {
          next.push(undefined)
          continue
        }
        const tok = sampleToken(logits.subarray(b * vocabSize, (b + 1) * vocabSize), opts, r)
        next.push(tok)
        if (opts.stopAtEos !== false && opts.eos !== undefined && tok === opts.eos) done[b] = true
      }
      const external = yield next // the caller may mark rows done (stop strings)
      external?.forEach((d, b) => d && (done[b] = true))
      if (done.every(Boolean) || n === maxTokens - 1) return
      const feed = next.map((t) => t ?? 0) // finished rows keep computing a dummy token
      feed.forEach((t, b) => seqs[b].push(t))
      logits = useCache ? step(feed.map((t) => [t])) : step(seqs)
    }
  } finally {
    cache?.dispose()
  }
}

function findStop(text: string, stop: string[] | undefined): number {
  let at = -1
  for (const s of stop ?? []) {
    if (!s) continue
    const i = text.indexOf(s)
    if (i >= 0 && (at < 0 || i < at)) at = i
  }
  return at
}

function promptIds(tokenizer: Tokenizer, prompt: string | number[], raw?: boolean): number[] {
  if (Array.isArray(prompt)) return prompt
  return raw ? [tokenizer.bos, ...tokenizer.encode(prompt)] : encodePrompt(tokenizer, prompt)
}

/** Generate for several prompts at once (one forward pass per token for all of them). */
export function generate(model: GPT, tokenizer: Tokenizer, prompts: (string | number[])[], opts: GenerateOptions = {}): Generation[] {
  const ids = prompts.map((p) => promptIds(tokenizer, p, opts.raw))
  const out: Generation[] = ids.map(() => ({ text: "", tokens: [], finishReason: "length" as FinishReason }))
  const finished = ids.map(() => false)
  const gen = generateTokens(model, ids, { ...opts, eos: tokenizer.eos })
  let res = gen.next()
  while (!res.done) {
    const marks = res.value.map((tok, b) => {
      if (tok === undefined || finished[b]) return false
      if (tok === tokenizer.eos && opts.stopAtEos !== false) {
        finished[b] = true
        out[b].finishReason = "eos"
        return true
      }
      out[b].tokens.push(tok)
      const text = tokenizer.decode(out[b].tokens)
      const at = findStop(text, opts.stop)
      if (at >= 0) {
        finished[b] = true
        out[b].finishReason = "stop"
        out[b].text = text.slice(0, at)
        return true
      }
      return false
    })
    res = gen.next(marks)
  }
  out.forEach((o, b) => {
    if (o.finishReason !== "stop") o.text = tokenizer.decode(o.tokens)
  })
  return out
}

export interface StreamChunk {
  /** new text since the previous chunk */
  text: string
  token: number
}

/**
 * Stream one prompt token by token. Text that might be the start of a stop string, or an
 * incomplete UTF-8 character, is held back until it is decided.
 */
export async function* generateStream(
  model: GPT,
  tokenizer: Tokenizer,
  prompt: string | number[],
  opts: GenerateOptions = {},
): AsyncGenerator<StreamChunk, Generation> {
  const ids = promptIds(tokenizer, prompt, opts.raw)
  const tokens: number[] = []
  let emitted = 0
  const holdBack = Math.max(0, ...(opts.stop ?? []).map((s) => s.length - 1))
  const gen = generateTokens(model, [ids], { ...opts, eos: tokenizer.eos })
  let finishReason: FinishReason = "length"
  let text = ""
  try {
    let res = gen.next()
    while (!res.done) {
      const tok = res.value[0]!
      if (tok === tokenizer.eos && opts.stopAtEos !== false) {
        finishReason = "eos"
        break
      }
      tokens.push(tok)
      text = tokenizer.decode(tokens)
      const at = findStop(text, opts.stop)
      if (at >= 0) {
        text = text.slice(0, at)
        finishReason = "stop"
        break
      }
      let safe = text.length - holdBack
      while (safe > emitted && text.charCodeAt(safe - 1) === 0xfffd) safe-- // incomplete UTF-8
      if (safe > emitted) {
        yield { text: text.slice(emitted, safe), token: tok }
        emitted = safe
      }
      await new Promise((r) => setImmediate(r))
      res = gen.next()
    }
  } finally {
    gen.return()
  }
  if (text.length > emitted) yield { text: text.slice(emitted), token: tokens[tokens.length - 1] ?? tokenizer.eos }
  return { text, tokens, finishReason }
}
