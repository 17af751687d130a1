// A GPT in the style of nanoGPT's model.py, over TensorFlow.js.
//
// Pre-norm decoder:  x = wte[ids] (+ wpe[pos])
//                    for each block: x += o_proj(attn(ln_1(x))); x += fc_out(gelu(fc_in(ln_2(x))))
//                    logits = ln_f(x) @ wteᵀ (tied) or lm_head
// The residual stream is kept 2-D, (B*T, C), so every linear layer is one plain matmul.
// Linear weights live in memory as [in, out] (x @ W); safetensors files use PyTorch's
// [out, in] and the checkpoint code transposes at save/load.

import * as tf from "@tensorflow/tfjs"
import { wasmKernelFixesInstalled } from "./wasm-kernels.js"
import { fusedHidden, type NativeKV } from "./fused-decode.js"
import { fusedOps, type FusedOps } from "./native/ops.js"

export interface GPTConfig {
  vocabSize: number
  contextLength: number
  dModel: number
  nLayers: number
  nHeads: number
  mlpRatio: number
  norm: "layernorm" | "rmsnorm"
  position: "learned" | "rope"
  dropout: number
  tiedEmbeddings: boolean
  bias: boolean
}

export const DEFAULT_CONFIG: Omit<GPTConfig, "vocabSize"> = {
  contextLength: 64,
  dModel: 128,
  nLayers: 4,
  nHeads: 4,
  mlpRatio: 4,
  norm: "layernorm",
  position: "learned",
  dropout: 0,
  tiedEmbeddings: true,
  bias: true,
}

/** Fill defaults and check every field; throws an Error saying which field is wrong and why. */
export function makeConfig(partial: Partial<GPTConfig> & { vocabSize: number }): GPTConfig {
  const c = { ...DEFAULT_CONFIG, ...partial } as GPTConfig
  const bad = (field: string, why: string) => {
    throw new Error(`GPTConfig.${field} = ${JSON.stringify((c as any)[field])}: ${why}`)
  }
  const posInt = (f: keyof GPTConfig) => {
    const v = c[f]
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) bad(f, "must be a positive integer")
  }
  for (const f of ["vocabSize", "contextLength", "dModel", "nLayers", "nHeads", "mlpRatio"] as const) posInt(f)
  if (c.dModel % c.nHeads !== 0) bad("dModel", `must be divisible by nHeads (${c.nHeads})`)
  if (c.position === "rope" && (c.dModel / c.nHeads) % 2 !== 0) bad("dModel", "head size must be even for RoPE")
  if (c.norm !== "layernorm" && c.norm !== "rmsnorm") bad("norm", 'must be "layernorm" or "rmsnorm"')
  if (c.position !== "learned" && c.position !== "rope") bad("position", 'must be "learned" or "rope"')
  if (typeof c.dropout !== "number" || c.dropout < 0 || c.dropout >= 1) bad("dropout", "must be in [0, 1)")
  if (typeof c.tiedEmbeddings !== "boolean") bad("tiedEmbeddings", "must be a boolean")
  if (typeof c.bias !== "boolean") bad("bias", "must be a boolean")
  const known = new Set(Object.keys(DEFAULT_CONFIG).concat("vocabSize"))
  for (const k of Object.keys(partial)) if (!known.has(k)) throw new Error(`GPTConfig has no field "${k}" (known: ${[...known].join(", ")})`)
  return c
}

/** What tune (LoRA, DoRA, int8 bases…) plugs into a linear layer. */
export interface LinearOverride {
  forward(
    x: tf.Tensor2D, // (N, in)
    ctx: { weight: tf.Tensor2D /* (in, out) */; bias?: tf.Tensor1D; base: (x: tf.Tensor2D) => tf.Tensor2D },
  ): tf.Tensor2D // (N, out)
}

/** Keys and values of past positions, per layer: (B, nh, Tpast, hs). Owned by the caller; `dispose()` when done. */
export class KVCache {
  k: (tf.Tensor4D | undefined)[]
  v: (tf.Tensor4D | undefined)[]
  length = 0
  /** left padding per row (batched prompts of different lengths); positions start after it */
  readonly pad: number[]
  /** the fused native decode's keys and values (then k and v stay empty); internal */
  native?: NativeKV
  constructor(nLayers: number, pad: number[] = []) {
    this.k = new Array(nLayers).fill(undefined)
    this.v = new Array(nLayers).fill(undefined)
    this.pad = pad
  }
  dispose() {
    for (const t of [...this.k, ...this.v]) t?.dispose()
    this.k.fill(undefined)
    this.v.fill(undefined)
    this.native = undefined
    this.length = 0
  }
}

export interface ForwardOptions {
  training?: boolean
  cache?: KVCache
  /** seed for dropout masks (training); the same seed gives the same masks */
  seed?: number
  /** with a cache on the native backend: run the fused native decode (default true; env MOA_FUSED_DECODE=0 disables it) */
  fused?: boolean
}

const EPS = 1e-5

export class GPT {
  readonly config: GPTConfig
  readonly params = new Map<string, tf.Variable>()
  private readonly overrides = new Map<string, LinearOverride>()
  private readonly linears: string[] = []
  private readonly maskCache = new Map<number, tf.Tensor2D>()
  private ropeRot?: tf.Tensor2D
  private ropeTable?: { cos: Float32Array; sin: Float32Array }
  private dropoutCounter = 0
  /** the native backend's fused GELU / norm / causal-softmax / attention ops during a forward pass, when available */
  private ops?: FusedOps

  constructor(config: GPTConfig, opts: { seed?: number } = {}) {
    this.config = makeConfig(config)
    const { vocabSize: V, contextLength: Tmax, dModel: C, nLayers: L } = this.config
    const F = this.config.mlpRatio * C
    let seed = opts.seed ?? 1337
    const std = 0.02
    const projStd = 0.02 / Math.sqrt(2 * L) // GPT-2: scaled init of residual projections
    const normal = (name: string, shape: number[], s: number) =>
      this.add(name, tf.tidy(() => tf.randomNormal(shape, 0, s, "float32", seed++)))
    const constant = (name: string, shape: number[], v: number) => this.add(name, tf.fill(shape, v))
    const norm = (name: string) => {
      constant(`${name}.weight`, [C], 1)
      if (this.config.norm === "layernorm") constant(`${name}.bias`, [C], 0)
    }
    const linear = (name: string, nin: number, nout: number, s: number) => {
      normal(`${name}.weight`, [nin, nout], s) // (in, out)
      if (this.config.bias) constant(`${name}.bias`, [nout], 0)
      this.linears.push(name)
    }
    normal("wte.weight", [V, C], std)
    if (this.config.position === "learned") normal("wpe.weight", [Tmax, C], std)
    for (let i = 0; i < L; i++) {
      const p = `h.${i}`
      norm(`${p}.ln_1`)
      linear(`${p}.attn.q_proj`, C, C, std)
      linear(`${p}.attn.k_proj`, C, C, std)
      linear(`${p}.attn.v_proj`, C, C, std)
      linear(`${p}.attn.o_proj`, C, C, projStd)
      norm(`${p}.ln_2`)
      linear(`${p}.mlp.fc_in`, C, F, std)
      linear(`${p}.mlp.fc_out`, F, C, projStd)
    }
    norm("ln_f")
    if (!this.config.tiedEmbeddings) {
      normal("lm_head.weight", [C, V], std) // (in, out) like every linear
      this.linears.push("lm_head")
    }
  }

  private add(name: string, t: tf.Tensor) {
    this.params.set(name, tf.variable(t, true))
    t.dispose()
  }

  private p(name: string): tf.Variable {
    const v = this.params.get(name)
    if (!v) throw new Error(`GPT has no parameter "${name}"`)
    return v
  }

  /** Names of every linear layer, the keys for setLinearOverride. */
  linearNames(): string[] {
    return [...this.linears]
  }

  /** The override of a linear layer, if one is set. */
  linearOverride(name: string): LinearOverride | undefined {
    return this.overrides.get(name)
  }

  setLinearOverride(name: string, override: LinearOverride | undefined) {
    if (!this.linears.includes(name)) throw new Error(`no linear layer "${name}"; see linearNames()`)
    if (override) this.overrides.set(name, override)
    else this.overrides.delete(name)
  }

  numParams(): number {
    let n = 0
    for (const v of this.params.values()) n += v.size
    return n
  }

  /** Every linear layer goes through here: x (N, in) → (N, out). */
  linear(name: string, x: tf.Tensor2D): tf.Tensor2D {
    const weight = this.p(`${name}.weight`) as tf.Tensor as tf.Tensor2D
    const bias = this.params.get(`${name}.bias`) as tf.Tensor as tf.Tensor1D | undefined // lm_head has none
    const ops = this.ops
    const base = (x: tf.Tensor2D): tf.Tensor2D => {
      if (ops?.linear && x.rank === 2 && x.dtype === "float32") return ops.linear(x, weight, bias) // one fused kernel on native
      const y = tf.matMul(x, weight) as tf.Tensor2D
      return bias ? (tf.add(y, bias) as tf.Tensor2D) : y
    }
    const o = this.overrides.get(name)
    return o ? o.forward(x, { weight, bias, base }) : base(x)
  }

  private norm(name: string, x: tf.Tensor2D): tf.Tensor2D {
    const w = this.p(`${name}.weight`)
    if (this.ops) {
      return this.config.norm === "rmsnorm"
        ? this.ops.rmsNorm(x, w as tf.Tensor as tf.Tensor1D)
        : this.ops.layerNorm(x, w as tf.Tensor as tf.Tensor1D, this.p(`${name}.bias`) as tf.Tensor as tf.Tensor1D)
    }
    if (this.config.norm === "rmsnorm") {
      const ms = tf.mean(tf.square(x), -1, true) // (N, 1)
      return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, EPS))), w)
    }
    const mu = tf.mean(x, -1, true) // (N, 1)
    const xc = tf.sub(x, mu)
    const variance = tf.mean(tf.square(xc), -1, true)
    return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(variance, EPS))), w), this.p(`${name}.bias`))
  }

  /** Embedding lookup. gather's gradient needs UnsortedSegmentSum, missing on stock wasm. */
  private embed(table: tf.Tensor2D, ids: tf.Tensor1D): tf.Tensor2D {
    if (tf.getBackend() === "wasm" && !wasmKernelFixesInstalled())
      return tf.matMul(tf.oneHot(ids, table.shape[0]).toFloat() as tf.Tensor2D, table)
    return tf.gather(table, ids)
  }

  private dropout<T extends tf.Tensor>(x: T, opts: ForwardOptions): T {
    const rate = this.config.dropout
    if (!opts.training || rate === 0) return x
    const seed = opts.seed === undefined ? undefined : opts.seed * 1000 + this.dropoutCounter++
    return tf.dropout(x, rate, undefined, seed) as T
  }

  /** Additive causal mask (T, T): 0 on and below the diagonal, -1e9 above. Cached per T. */
  private causalMask(T: number): tf.Tensor2D {
    let m = this.maskCache.get(T)
    if (!m) {
      const a = new Float32Array(T * T)
      for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) a[i * T + j] = -1e9
      m = tf.keep(tf.tensor2d(a, [T, T]))
      this.maskCache.set(T, m)
    }
    return m
  }

  /** (B, 1, T, Tk) mask for padded batches: query i of row b sees key j iff pad_b <= j <= past + i. */
  private paddedMask(B: number, T: number, past: number, pad: number[]): tf.Tensor4D {
    const Tk = past + T
    const a = new Float32Array(B * T * Tk)
    for (let b = 0; b < B; b++)
      for (let i = 0; i < T; i++)
        for (let j = 0; j < Tk; j++) if (j < (pad[b] ?? 0) || j > past + i) a[(b * T + i) * Tk + j] = -1e9
    return tf.tensor4d(a, [B, 1, T, Tk])
  }

  /** Position of each token (B*T), shifted by left padding. */
  private positions(B: number, T: number, past: number, pad: number[]): Int32Array {
    const pos = new Int32Array(B * T)
    for (let b = 0; b < B; b++)
      for (let t = 0; t < T; t++) pos[b * T + t] = Math.max(0, past + t - (pad[b] ?? 0))
    return pos
  }

  /** RoPE (HF Llama rotate-half): x·cos + rotate_half(x)·sin, rotate_half as a fixed (hs, hs) matmul. */
  private rope(x: tf.Tensor4D, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor4D {
    const [B, nh, T, hs] = x.shape
    const rotated = tf.matMul(tf.reshape(x, [B * nh * T, hs]), this.ropeRotation(hs)).reshape([B, nh, T, hs])
    return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D
  }

  private ropeRotation(hs: number): tf.Tensor2D {
    if (!this.ropeRot) {
      const h = hs / 2
      const r = new Float32Array(hs * hs)
      for (let j = 0; j < h; j++) r[(j + h) * hs + j] = -1 // out[j] = -x[j+h]
      for (let j = h; j < hs; j++) r[(j - h) * hs + j] = 1 // out[j] = x[j-h]
      this.ropeRot = tf.keep(tf.tensor2d(r, [hs, hs]))
    }
    return this.ropeRot
  }

  /** cos/sin for the given positions: (T, hs) when shared by all rows, else (B, 1, T, hs). */
  private ropeTables(B: number, T: number, pos: Int32Array, shared: boolean): [tf.Tensor, tf.Tensor] {
    const hs = this.config.dModel / this.config.nHeads
    if (!this.ropeTable) {
      const Tmax = this.config.contextLength
      const cos = new Float32Array(Tmax * hs)
      const sin = new Float32Array(Tmax * hs)
      for (let p = 0; p < Tmax; p++)
        for (let i = 0; i < hs / 2; i++) {
          const ang = p * Math.pow(10000, (-2 * i) / hs)
          cos[p * hs + i] = cos[p * hs + i + hs / 2] = Math.cos(ang)
          sin[p * hs + i] = sin[p * hs + i + hs / 2] = Math.sin(ang)
        }
      this.ropeTable = { cos, sin }
    }
    const rows = shared ? T : B * T
    const c = new Float32Array(rows * hs)
    const s = new Float32Array(rows * hs)
    for (let r = 0; r < rows; r++) {
      c.set(this.ropeTable.cos.subarray(pos[r] * hs, (pos[r] + 1) * hs), r * hs)
      s.set(this.ropeTable.sin.subarray(pos[r] * hs, (pos[r] + 1) * hs), r * hs)
    }
    const shape = shared ? [T, hs] : [B, 1, T, hs]
    return [tf.tensor(c, shape), tf.tensor(s, shape)]
  }

  private attention(
    i: number,
    x: tf.Tensor2D, // (B*T, C)
    B: number,
    T: number,
    mask: tf.Tensor | undefined,
    rope: [tf.Tensor, tf.Tensor] | undefined,
    opts: ForwardOptions,
  ): tf.Tensor2D {
    const { dModel: C, nHeads: nh } = this.config
    const hs = C / nh
    const p = `h.${i}.attn`
    const causal = mask === undefined || mask === this.maskCache.get(T)
    if (this.ops?.attention && !rope && !opts.cache && causal && !(opts.training && this.config.dropout > 0)) {
      // one fused kernel forward and one backward, heads as column blocks of (B*T, C): no transposes
      const y = this.ops.attention(this.linear(`${p}.q_proj`, x), this.linear(`${p}.k_proj`, x), this.linear(`${p}.v_proj`, x),
        B, T, nh, 1 / Math.sqrt(hs)) // (B*T, C)
      return this.dropout(this.linear(`${p}.o_proj`, y), opts)
    }
    const heads = (t: tf.Tensor2D) => tf.transpose(tf.reshape(t, [B, T, nh, hs]), [0, 2, 1, 3]) as tf.Tensor4D
    let q = heads(this.linear(`${p}.q_proj`, x)) // (B, nh, T, hs)
    let k = heads(this.linear(`${p}.k_proj`, x)) // (B, nh, T, hs)
    let v = heads(this.linear(`${p}.v_proj`, x)) // (B, nh, T, hs)
    if (rope) {
      q = this.rope(q, rope[0], rope[1])
      k = this.rope(k, rope[0], rope[1])
    }
    const cache = opts.cache
    if (cache) {
      const pk = cache.k[i]
      const pv = cache.v[i]
      if (pk && pv) {
        k = tf.concat([pk, k], 2) // (B, nh, Tpast+T, hs)
        v = tf.concat([pv, v], 2)
      }
      cache.k[i] = tf.keep(k)
      cache.v[i] = tf.keep(v)
      pk?.dispose()
      pv?.dispose()
    }
    let att: tf.Tensor
    if (this.ops && causal) {
      // one fused kernel: softmax(q·kᵀ/√hs) with keys after the query masked
      att = this.ops.causalSoftmax(tf.matMul(q, k, false, true), 1 / Math.sqrt(hs), T > 1) // (B, nh, T, Tk)
    } else {
      q = tf.mul(q, 1 / Math.sqrt(hs))
      att = tf.matMul(q, k, false, true) // (B, nh, T, Tk)
      if (mask) att = tf.add(att, mask)
      att = tf.softmax(att)
    }
    att = this.dropout(att, opts)
    const y = tf.matMul(att, v) // (B, nh, T, hs)
    const merged = tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [B * T, C]) // (B*T, C)
    return this.dropout(this.linear(`${p}.o_proj`, merged as tf.Tensor2D), opts)
  }

  private mlp(i: number, x: tf.Tensor2D, opts: ForwardOptions): tf.Tensor2D {
    const h = this.linear(`h.${i}.mlp.fc_in`, x) // (B*T, 4C)
    const g = (this.ops ? this.ops.gelu(h) : tf.mul(h, tf.sigmoid(tf.mul(h, 1.702)))) as tf.Tensor2D // GELU, sigmoid form
    return this.dropout(this.linear(`h.${i}.mlp.fc_out`, g), opts) // (B*T, C)
  }

  /** The last hidden states after ln_f, (B*T, C). */
  hidden(ids: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor2D {
    const [B, T] = ids.shape
    const { contextLength } = this.config
    const cache = opts.cache
    const past = cache?.length ?? 0
    if (past + T > contextLength)
      throw new Error(`sequence of ${past + T} tokens is longer than contextLength ${contextLength}`)
    if (cache && !opts.training && opts.fused !== false) {
      const h = fusedHidden(this, ids, cache) // (B*T, C), or undefined when it does not apply
      if (h) return h
    }
    const pad = cache?.pad ?? []
    const padded = pad.some((p) => p > 0)
    this.dropoutCounter = 0
    this.ops = fusedOps()
    try {
      return this.hiddenOps(ids, B, T, past, pad, padded, opts)
    } finally {
      this.ops = undefined
    }
  }

  private hiddenOps(ids: tf.Tensor2D, B: number, T: number, past: number, pad: number[], padded: boolean, opts: ForwardOptions): tf.Tensor2D {
    const { nLayers, position } = this.config
    const cache = opts.cache
    return tf.tidy(() => {
      const flat = tf.reshape(ids, [B * T]) as tf.Tensor1D
      let x = this.embed(this.p("wte.weight") as tf.Tensor as tf.Tensor2D, flat) // (B*T, C)
      const pos = this.positions(B, T, past, pad)
      let rope: [tf.Tensor, tf.Tensor] | undefined
      if (position === "learned") {
        const posIds = tf.tensor1d(pos, "int32")
        x = tf.add(x, this.embed(this.p("wpe.weight") as tf.Tensor as tf.Tensor2D, posIds)) // (B*T, C)
      } else {
        rope = this.ropeTables(B, T, pos, !padded)
      }
      x = this.dropout(x, opts)
      let mask: tf.Tensor | undefined
      if (padded) mask = this.paddedMask(B, T, past, pad)
      else if (T > 1 && past === 0) mask = this.causalMask(T)
      else if (T > 1) mask = this.paddedMask(1, T, past, [0]).reshape([T, past + T])
      for (let i = 0; i < nLayers; i++) {
        x = tf.add(x, this.attention(i, this.norm(`h.${i}.ln_1`, x), B, T, mask, rope, opts))
        x = tf.add(x, this.mlp(i, this.norm(`h.${i}.ln_2`, x), opts))
      }
      if (cache) cache.length = past + T
      return this.norm("ln_f", x)
    })
  }

  /** Project hidden states (N, C) to logits (N, V). */
  head(h: tf.Tensor2D): tf.Tensor2D {
    if (this.config.tiedEmbeddings) return tf.matMul(h, this.p("wte.weight"), false, true)
    return this.linear("lm_head", h)
  }

  /** ids (B, T) int32 → logits (B, T, V). With a cache, ids are the new tokens only. */
  forward(ids: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor3D {
    const [B, T] = ids.shape
    return tf.tidy(() => tf.reshape(this.head(this.hidden(ids, opts)), [B, T, this.config.vocabSize]) as tf.Tensor3D)
  }

  /**
   * Sum of log-probs of the tokens marked in `mask` (B, T) (1 = score this token given
   * everything before it; position 0 cannot be scored). Differentiable: usable in a DPO loss.
   */
  sequenceLogProbs(ids: tf.Tensor2D, mask: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor1D {
    const [B, T] = ids.shape
    return tf.tidy(() => {
      const logits = this.head(this.hidden(ids, opts)) // (B*T, V)
      const targets = tf.concat([tf.slice(ids, [0, 1], [B, T - 1]), tf.zeros([B, 1], "int32")], 1) // (B, T)
      const w = tf.concat([tf.slice(mask, [0, 1], [B, T - 1]), tf.zeros([B, 1])], 1).toFloat() // (B, T)
      const logp = tf.logSoftmax(logits) // (B*T, V)
      const picked = tf.sum(tf.mul(logp, tf.oneHot(tf.reshape(targets, [B * T]), this.config.vocabSize)), -1) // (B*T)
      return tf.sum(tf.mul(tf.reshape(picked, [B, T]), w), -1) as tf.Tensor1D // (B)
    })
  }

  /** Plain-number version: sum of log-probs of each completion given its prompt. */
  logProbs(prompts: number[][], completions: number[][]): number[] {
    if (prompts.length !== completions.length)
      throw new Error(`logProbs: ${prompts.length} prompts but ${completions.length} completions`)
    if (prompts.length === 0) return []
    const rows = prompts.map((p, i) => {
      if (p.length === 0) throw new Error(`logProbs: prompt ${i} is empty (it needs at least a bos token)`)
      return p.concat(completions[i])
    })
    const T = Math.max(...rows.map((r) => r.length))
    if (T > this.config.contextLength)
      throw new Error(`logProbs: prompt+completion of ${T} tokens exceeds contextLength ${this.config.contextLength}`)
    const B = rows.length
    const ids = new Int32Array(B * T)
    const mask = new Float32Array(B * T)
    rows.forEach((r, b) => {
      ids.set(r, b * T)
      for (let t = prompts[b].length; t < r.length; t++) mask[b * T + t] = 1
    })
    const out = tf.tidy(() => this.sequenceLogProbs(tf.tensor2d(ids, [B, T], "int32"), tf.tensor2d(mask, [B, T])))
    const values = Array.from(out.dataSync())
    out.dispose()
    return values
  }

  dispose() {
    for (const v of this.params.values()) v.dispose()
    this.params.clear()
    for (const m of this.maskCache.values()) m.dispose()
    this.maskCache.clear()
    this.ropeRot?.dispose()
    this.ropeRot = undefined
  }
}
