/**
 * The serving engine of one expert process: one base model in memory, its adapters, and a
 * micro-batcher that runs concurrent generate requests as one batched decoding loop.
 *
 * Everything numeric runs on the JS thread in short synchronous pieces (one decoding step of a
 * batch, one training step, one scoring pass); between pieces the engine yields to the event
 * loop, so NATS I/O, new requests and a training job interleave. Each serving piece installs the
 * adapter it needs on the model's linear hook and restores the previous one (`borrow`), so a
 * training job's adapter stays installed across its own awaits and pieces for different adapters
 * can follow each other safely.
 *
 * Batching: requests queue for at most `windowMs` (less when a deadline is closer); then the
 * oldest request and up to `maxBatch − 1` compatible ones run together. Compatible = same adapter
 * (name@version) and the batch still fits the context for each row's own token budget, so a row
 * gets exactly the tokens it would get alone. Rows are left-padded; the model masks the padding
 * and shifts positions, so greedy answers equal one-by-one answers (tested). Each row keeps its
 * own sampling settings, seed, stop strings and token budget.
 */
import * as tf from "@tensorflow/tfjs"
import { encodePrompt, KVCache, rng, sampleToken, type GPT, type Tokenizer } from "@moa/model"
import type { Adapter } from "@moa/tune"
import { moaError, type GenerateChunk, type GenerateRequest, type GenerateResponse, type MoaError, type ScoreRequest, type ScoreResponse } from "@moa/protocol"
import type { AdapterStore } from "./adapters.ts"

export interface BatchingOptions {
  /** How long the first request of a batch waits for company, ms (default 4). */
  readonly windowMs: number
  /** Most rows in one batch (default 16); 1 turns micro-batching off. */
  readonly maxBatch: number
}

export const defaultBatching: BatchingOptions = { windowMs: 4, maxBatch: 16 }

export interface EngineStats {
  batches: number
  rows: number
  maxBatchSize: number
  /** batch size → how many batches had it */
  batchSizes: Record<string, number>
  lastBatchSize: number
  tokensGenerated: number
  timeouts: number
  queued: number
}

interface Row {
  readonly req: GenerateRequest
  readonly ids: number[]
  readonly maxNew: number
  readonly temperature: number
  readonly topK: number
  readonly topP: number
  readonly stop: ReadonlyArray<string>
  readonly holdBack: number
  readonly random: () => number
  readonly adapterRef: string | undefined
  readonly deadline: number
  readonly signal?: AbortSignal
  readonly enqueuedAt: number
  readonly onChunk?: (c: GenerateChunk) => void
  readonly resolve: (r: GenerateResponse) => void
  readonly reject: (e: MoaError) => void
  tokens: number[]
  logprobs: number[]
  text: string
  emitted: number
  chunkIndex: number
  done: boolean
}

const tick = () => new Promise<void>((r) => setImmediate(r))

export class Engine {
  readonly stats: EngineStats = { batches: 0, rows: 0, maxBatchSize: 0, batchSizes: {}, lastBatchSize: 0, tokensGenerated: 0, timeouts: 0, queued: 0 }
  private active: Adapter | undefined
  private queue: Row[] = []
  private running = false
  private timer: NodeJS.Timeout | undefined
  private closed = false

  constructor(
    readonly model: GPT,
    readonly tokenizer: Tokenizer,
    readonly modelName: string,
    public batching: BatchingOptions,
    public store?: AdapterStore,
  ) {}

  /** Install `adapter` (or none: the base) on the model's linear hook. */
  activate(adapter: Adapter | undefined) {
    if (this.active === adapter) return
    this.active?.detach()
    this.active = undefined
    adapter?.attach(this.model)
    this.active = adapter
  }

  /**
   * Run one synchronous piece of serving work with `adapter` installed, then put back whatever was
   * installed before. A training job installs its adapter and keeps it across its awaits; serving
   * pieces that run in between borrow the hook and leave it as they found it.
   */
  borrow<T>(adapter: Adapter | undefined, fn: () => T): T {
    const prev = this.active
    this.activate(adapter)
    try {
      return fn()
    } finally {
      this.activate(prev)
    }
  }

  /** Called before an adapter object is disposed. */
  forget(adapter: Adapter) {
    if (this.active === adapter) this.activate(undefined)
  }

  /** Let other work (I/O, requests, a training job) run. */
  yield(): Promise<void> {
    return tick()
  }

  // ---------------------------------------------------------------------------------------
  // generate

  private prepare(req: GenerateRequest, deadline: number, signal: AbortSignal | undefined, cb: Pick<Row, "onChunk" | "resolve" | "reject">): Row {
    const ctx = this.model.config.contextLength
    const ids = encodePrompt(this.tokenizer, req.prompt)
    if (ids.length >= ctx)
      throw moaError("BAD_REQUEST", `the prompt is ${ids.length} tokens with its markers; this model's context is ${ctx}, leaving no room to answer. Shorten the prompt.`, { field: "prompt" })
    if (req.adapter !== undefined) {
      if (!this.store) throw moaError("NOT_FOUND", `this expert serves no adapters; drop "adapter"`, { field: "adapter" })
      this.store.resolve(req.adapter) // NOT_FOUND now, before queueing
    }
    const stop = (req.stop ?? []).filter((s) => s.length > 0)
    return {
      req,
      ids,
      maxNew: Math.min(req.maxTokens ?? 64, ctx - ids.length),
      temperature: req.temperature ?? 1,
      topK: req.topK ?? 0,
      topP: req.topP ?? 1,
      stop,
      holdBack: Math.max(0, ...stop.map((s) => s.length - 1)),
      random: rng(req.seed ?? Math.floor(Math.random() * 2 ** 31)),
      adapterRef: req.adapter,
      deadline,
      signal,
      enqueuedAt: Date.now(),
      ...cb,
      tokens: [],
      logprobs: [],
      text: "",
      emitted: 0,
      chunkIndex: 0,
      done: false,
    }
  }

  /** One answer for one request (batched with others behind the scenes). */
  generate(req: GenerateRequest, opts: { deadline?: number; signal?: AbortSignal } = {}): Promise<GenerateResponse> {
    return new Promise((resolve, reject) => {
      const row = this.prepare(req, opts.deadline ?? Date.now() + 60_000, opts.signal, { resolve, reject })
      this.enqueue(row)
    })
  }

  /** Chunks as tokens are decided (text that could start a stop string is held back). */
  stream(req: GenerateRequest, opts: { deadline?: number; signal?: AbortSignal } = {}): AsyncIterable<GenerateChunk> {
    const chunks: GenerateChunk[] = []
    let wake: (() => void) | undefined
    let finished = false
    let failure: MoaError | undefined
    const notify = () => {
      wake?.()
      wake = undefined
    }
    const row = this.prepare(req, opts.deadline ?? Date.now() + 60_000, opts.signal, {
      onChunk: (c) => {
        chunks.push(c)
        notify()
      },
      resolve: () => {
        finished = true
        notify()
      },
      reject: (e) => {
        failure = e
        finished = true
        notify()
      },
    })
    this.enqueue(row)
    return {
      async *[Symbol.asyncIterator]() {
        for (;;) {
          while (chunks.length > 0) yield chunks.shift()!
          if (failure) throw failure
          if (finished) return
          await new Promise<void>((r) => (wake = r))
        }
      },
    }
  }

  private enqueue(row: Row) {
    if (this.closed) throw moaError("UNAVAILABLE", "the expert is shutting down")
    this.queue.push(row)
    this.stats.queued = this.queue.length
    this.schedule()
  }

  private schedule() {
    if (this.running || this.timer || this.queue.length === 0) return
    const now = Date.now()
    const oldest = this.queue[0]
    let delay = this.batching.maxBatch <= 1 || this.queue.length >= this.batching.maxBatch ? 0 : Math.max(0, oldest.enqueuedAt + this.batching.windowMs - now)
    const soonest = Math.min(...this.queue.map((r) => r.deadline))
    delay = Math.min(delay, Math.max(0, soonest - now - 1))
    this.timer = setTimeout(() => {
      this.timer = undefined
      void this.runNext()
    }, delay)
  }

  private expired(r: Row): MoaError | undefined {
    if (r.signal?.aborted) return moaError("CANCELLED", "the request was cancelled")
    if (Date.now() > r.deadline) return moaError("TIMEOUT", `generate passed its deadline after ${r.tokens.length} tokens`)
    return undefined
  }

  private async runNext() {
    if (this.running) return
    this.running = true
    try {
      // drop what already passed its deadline
      this.queue = this.queue.filter((r) => {
        const e = this.expired(r)
        if (e) {
          this.stats.timeouts++
          r.reject(e)
        }
        return !e
      })
      if (this.queue.length === 0) return
      const first = this.queue[0]
      const group: Row[] = [first]
      let L = first.ids.length
      const ctx = this.model.config.contextLength
      for (const r of this.queue.slice(1)) {
        if (group.length >= this.batching.maxBatch) break
        if (r.adapterRef !== first.adapterRef) continue
        const L2 = Math.max(L, r.ids.length)
        if (group.concat(r).every((g) => L2 + g.maxNew <= ctx)) {
          group.push(r)
          L = L2
        }
      }
      const taken = new Set(group)
      this.queue = this.queue.filter((r) => !taken.has(r))
      this.stats.queued = this.queue.length
      let lease: { adapter: Adapter; key: string; release: () => void } | undefined
      try {
        lease = first.adapterRef !== undefined ? this.store!.acquire(first.adapterRef) : undefined
      } catch (e) {
        for (const r of group) r.reject(e as MoaError)
        return
      }
      try {
        await this.runBatch(group, lease?.adapter, lease?.key)
      } finally {
        lease?.release()
      }
    } catch (e) {
      // a bug or a numeric failure: fail the rows of this batch, keep serving
      console.error("[moa/expert] batch failed", e)
    } finally {
      this.running = false
      this.schedule()
    }
  }

  private async runBatch(rows: Row[], adapter: Adapter | undefined, key: string | undefined) {
    const B = rows.length
    const st = this.stats
    st.batches++
    st.rows += B
    st.lastBatchSize = B
    st.maxBatchSize = Math.max(st.maxBatchSize, B)
    st.batchSizes[B] = (st.batchSizes[B] ?? 0) + 1
    const V = this.model.config.vocabSize
    const L = Math.max(...rows.map((r) => r.ids.length))
    const pad = rows.map((r) => L - r.ids.length)
    const cache = new KVCache(this.model.config.nLayers, pad)
    const eos = this.tokenizer.eos
    const step = (tokens: number[][]): Float32Array => {
      const T = tokens[0].length
      const out = this.borrow(adapter, () => tf.tidy(() => {
        const ids = tf.tensor2d(tokens.flat(), [B, T], "int32")
        const h = this.model.hidden(ids, { cache }) // (B*T, C)
        const last = T === 1 ? h : tf.gather(h, tf.tensor1d(Array.from({ length: B }, (_, b) => b * T + T - 1), "int32")) // (B, C)
        return this.model.head(last) // (B, V)
      }))
      const data = out.dataSync() as Float32Array
      out.dispose()
      return data
    }
    const finish = (r: Row, reason: GenerateResponse["finishReason"], text?: string) => {
      r.done = true
      r.text = text ?? this.tokenizer.decode(r.tokens)
      if (r.onChunk) {
        const rest = r.text.slice(r.emitted)
        r.onChunk({ index: r.chunkIndex++, text: rest, done: true, finishReason: reason, tokens: r.tokens.length })
        r.emitted = r.text.length
      }
      st.tokensGenerated += r.tokens.length
      r.resolve({
        text: r.text,
        tokens: r.tokens.length,
        finishReason: reason,
        ...(r.req.logprobs ? { logprobs: r.logprobs } : {}),
        usage: { promptTokens: r.ids.length, completionTokens: r.tokens.length },
        model: this.modelName,
        ...(key ? { adapter: key } : {}),
      })
    }
    try {
      let logits = step(rows.map((r) => new Array<number>(L - r.ids.length).fill(0).concat(r.ids)))
      for (let n = 0; ; n++) {
        const feed: number[] = []
        for (let b = 0; b < B; b++) {
          const r = rows[b]
          if (r.done) {
            feed.push(0) // finished rows keep computing a dummy token
            continue
          }
          const e = this.expired(r)
          if (e) {
            r.done = true
            st.timeouts++
            r.reject(e)
            feed.push(0)
            continue
          }
          if (n >= r.maxNew) {
            finish(r, "length")
            feed.push(0)
            continue
          }
          const lg = logits.subarray(b * V, (b + 1) * V)
          const tok = sampleToken(lg, { temperature: r.temperature, topK: r.topK, topP: r.topP }, r.random)
          feed.push(tok)
          if (tok === eos) {
            finish(r, "stop")
            continue
          }
          if (r.req.logprobs) r.logprobs.push(logProbOf(lg, tok))
          r.tokens.push(tok)
          const text = this.tokenizer.decode(r.tokens)
          const at = findStop(text, r.stop)
          if (at >= 0) {
            finish(r, "stop", text.slice(0, at))
            continue
          }
          if (r.onChunk) {
            let safe = text.length - r.holdBack
            while (safe > r.emitted && text.charCodeAt(safe - 1) === 0xfffd) safe-- // incomplete UTF-8
            if (safe > r.emitted) {
              r.onChunk({ index: r.chunkIndex++, text: text.slice(r.emitted, safe), ...(r.req.logprobs ? { logprob: r.logprobs[r.logprobs.length - 1] } : {}) })
              r.emitted = safe
            }
          }
          if (r.tokens.length >= r.maxNew) finish(r, "length", text)
        }
        if (rows.every((r) => r.done)) break
        await tick()
        logits = step(feed.map((t) => [t]))
      }
    } catch (e) {
      const err = moaError("INTERNAL", `generation failed: ${(e as Error).message}`)
      for (const r of rows) if (!r.done) r.reject(err)
      throw e
    } finally {
      cache.dispose()
    }
  }

  // ---------------------------------------------------------------------------------------
  // score

  /**
   * Log-probs of each completion (its tokens and the end-of-sequence marker, as in training)
   * given the prompt in the training format, batched 32 completions per forward pass.
   */
  async score(req: ScoreRequest): Promise<ScoreResponse> {
    const ctx = this.model.config.contextLength
    const prompt = encodePrompt(this.tokenizer, req.prompt)
    const completions = req.completions.map((c, i) => {
      const ids = [...this.tokenizer.encode(c), this.tokenizer.eos]
      if (prompt.length + ids.length > ctx + 1)
        throw moaError("BAD_REQUEST", `prompt + completion ${i} are ${prompt.length + ids.length - 1} tokens; this model's context is ${ctx}`, { field: `completions.${i}` })
      return ids
    })
    const lease = req.adapter !== undefined ? this.acquireOrThrow(req.adapter) : undefined
    try {
      const perToken: number[][] = []
      for (let i = 0; i < completions.length; i += 32) {
        perToken.push(...this.borrow(lease?.adapter, () => tokenLogProbs(this.model, prompt, completions.slice(i, i + 32))))
        if (i + 32 < completions.length) await tick()
      }
      return {
        logprobs: perToken.map((p) => p.reduce((a, b) => a + b, 0)),
        tokens: completions.map((c) => c.length),
        ...(req.perToken ? { perToken } : {}),
        model: this.modelName,
        ...(lease ? { adapter: lease.key } : {}),
      }
    } finally {
      lease?.release()
    }
  }

  private acquireOrThrow(ref: string) {
    if (!this.store) throw moaError("NOT_FOUND", `this expert serves no adapters; drop "adapter"`, { field: "adapter" })
    return this.store.acquire(ref)
  }

  /** Stop taking work; fail what is queued. */
  close() {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    for (const r of this.queue) r.reject(moaError("UNAVAILABLE", "the expert is shutting down"))
    this.queue = []
  }
}

function findStop(text: string, stop: ReadonlyArray<string>): number {
  let at = -1
  for (const s of stop) {
    const i = text.indexOf(s)
    if (i >= 0 && (at < 0 || i < at)) at = i
  }
  return at
}

/** log softmax(logits)[tok], computed stably in float64. */
function logProbOf(logits: Float32Array, tok: number): number {
  let max = -Infinity
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i]
  let sum = 0
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max)
  return logits[tok] - max - Math.log(sum)
}

/**
 * Per-token log-probs of each completion after the shared prompt: one forward pass over the
 * right-padded rows [prompt ++ completion], then log-softmax at the positions that predict
 * completion tokens. Returns one array per completion.
 */
export function tokenLogProbs(model: GPT, prompt: number[], completions: number[][]): number[][] {
  const rows = completions.map((c) => prompt.concat(c))
  const T = Math.max(...rows.map((r) => r.length)) - 1 // inputs predict the next token
  const B = rows.length
  const V = model.config.vocabSize
  const ids = new Int32Array(B * T)
  const targets = new Int32Array(B * T)
  rows.forEach((r, b) => {
    for (let t = 0; t < r.length - 1; t++) {
      ids[b * T + t] = r[t]
      targets[b * T + t] = r[t + 1]
    }
  })
  const picked = tf.tidy(() => {
    const logits = model.forward(tf.tensor2d(ids, [B, T], "int32")) // (B, T, V)
    const logp = tf.logSoftmax(tf.reshape(logits, [B * T, V])) // (B*T, V)
    return tf.sum(tf.mul(logp, tf.oneHot(tf.tensor1d(targets, "int32"), V)), -1) // (B*T)
  })
  const data = picked.dataSync() as Float32Array
  picked.dispose()
  return completions.map((c, b) => Array.from(data.subarray(b * T + prompt.length - 1, b * T + prompt.length - 1 + c.length)))
}
