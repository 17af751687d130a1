// The fused native decode (src/fused-decode.ts + js_decode in the addon) against the tfjs path:
// same greedy tokens and logits within 1e-4 of the `cpu` backend, for both architectures
// (layernorm + learned positions + tied + bias; rmsnorm + RoPE + untied + no bias), padded
// batches, and with LoRA / DoRA overrides merged; a non-affine override falls back with a log line.
import * as tf from "@tensorflow/tfjs"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import { GPT, KVCache, generateTokens, makeConfig, type GPTConfig, type LinearOverride } from "../src/index.js"
import * as native from "../src/native/index.js"

const built = native.available()
if (!built) console.warn(`[fused-decode.test] SKIPPED: native addon not available — ${native.reason()}`)

/** LoRA / DoRA as in packages/tune (y = x W + b + s·x A B; DoRA rescales columns of W + s A B). */
class TestLora implements LinearOverride {
  A: tf.Variable
  B: tf.Variable
  magnitude?: tf.Variable
  training = false
  constructor(nin: number, nout: number, readonly scaling: number, seed: number, dora: boolean) {
    this.A = tf.variable(tf.randomUniform([nin, 4], -0.3, 0.3, "float32", seed))
    this.B = tf.variable(tf.randomUniform([4, nout], -0.3, 0.3, "float32", seed + 1))
    if (dora) this.magnitude = tf.variable(tf.randomUniform([nout], 0.5, 1.5, "float32", seed + 2))
  }
  forward(x: tf.Tensor2D, ctx: { weight: tf.Tensor2D; bias?: tf.Tensor1D; base: (x: tf.Tensor2D) => tf.Tensor2D }): tf.Tensor2D {
    const xd = this.training ? (tf.dropout(x, 0.5) as tf.Tensor2D) : x // dropout only while training
    const lora = tf.mul(tf.matMul(tf.matMul(xd, this.A as tf.Tensor2D), this.B as tf.Tensor2D), this.scaling) as tf.Tensor2D
    if (!this.magnitude) return tf.add(ctx.base(x), lora)
    const w = tf.add(ctx.weight, tf.mul(tf.matMul(this.A as tf.Tensor2D, this.B as tf.Tensor2D), this.scaling))
    const s = tf.div(this.magnitude, tf.sqrt(tf.sum(tf.square(w), 0)))
    const y = tf.mul(tf.add(tf.matMul(x, ctx.weight), lora), s)
    return (ctx.bias ? tf.add(y, ctx.bias) : y) as tf.Tensor2D
  }
  dispose() {
    for (const v of [this.A, this.B, this.magnitude]) v?.dispose()
  }
}

const ARCHS: Record<string, Partial<GPTConfig>> = {
  "layernorm learned tied bias": { vocabSize: 50, contextLength: 24, dModel: 32, nLayers: 2, nHeads: 4 },
  "rmsnorm rope untied no-bias": { vocabSize: 50, contextLength: 24, dModel: 32, nLayers: 2, nHeads: 4, norm: "rmsnorm", position: "rope", tiedEmbeddings: false, bias: false },
}

type Adapt = "none" | "lora" | "dora" | "nonaffine"

function makeModel(arch: Partial<GPTConfig>, adapt: Adapt): { model: GPT; loras: TestLora[] } {
  const model = new GPT(makeConfig(arch as GPTConfig), { seed: 3 })
  // perturb norms and biases away from 1/0 so every slot matters
  tf.tidy(() => {
    let s = 100
    for (const [n, v] of model.params) if (v.rank === 1) v.assign(tf.add(v, tf.randomUniform(v.shape, -0.3, 0.3, "float32", s++)))
  })
  const loras: TestLora[] = []
  if (adapt !== "none") {
    const C = model.config.dModel
    const F = C * model.config.mlpRatio
    let seed = 40
    for (const name of model.linearNames().filter((n) => /q_proj|v_proj|fc_in|fc_out|lm_head/.test(n))) {
      const [nin, nout] = name.endsWith("fc_in") ? [C, F] : name.endsWith("fc_out") ? [F, C] : name === "lm_head" ? [C, model.config.vocabSize] : [C, C]
      const l = new TestLora(nin, nout, 0.5, seed, adapt === "dora")
      seed += 3
      if (adapt === "nonaffine") l.training = true
      loras.push(l)
      model.setLinearOverride(name, l)
    }
  }
  return { model, loras }
}

/** Logits (B, V) of every decode step: prompt, then greedy tokens fed back; plus the tokens. */
function decodeLogits(model: GPT, prompts: number[][], steps: number, fused: boolean): { logits: Float32Array[]; tokens: number[][]; usedNative: boolean } {
  const B = prompts.length
  const L = Math.max(...prompts.map((p) => p.length))
  const pad = prompts.map((p) => L - p.length)
  const cache = new KVCache(model.config.nLayers, pad)
  const V = model.config.vocabSize
  const logits: Float32Array[] = []
  const tokens: number[][] = prompts.map(() => [])
  let feed = prompts.map((p, b) => new Array<number>(pad[b]).fill(0).concat(p))
  let usedNative = false
  for (let s = 0; s <= steps; s++) {
    const T = feed[0].length
    const out = tf.tidy(() => {
      const h = model.hidden(tf.tensor2d(feed.flat(), [B, T], "int32"), { cache, fused })
      const last = tf.gather(h, tf.tensor1d(Array.from({ length: B }, (_, b) => b * T + T - 1), "int32"))
      return model.head(last)
    })
    usedNative ||= cache.native !== undefined
    const l = out.dataSync().slice() as Float32Array
    out.dispose()
    logits.push(l)
    feed = Array.from({ length: B }, (_, b) => {
      let best = 0
      for (let i = 1; i < V; i++) if (l[b * V + i] > l[b * V + best]) best = i
      tokens[b].push(best)
      return [best]
    })
  }
  cache.dispose()
  return { logits, tokens, usedNative }
}

describe.skipIf(!built)("fused native decode vs the tfjs path", () => {
  beforeAll(async () => {
    await native.register()
  })
  afterAll(async () => {
    await tf.setBackend("cpu")
  })

  const prompts = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]] // padded batch
  for (const [archName, arch] of Object.entries(ARCHS)) {
    for (const adapt of ["none", "lora", "dora"] as const) {
      if (adapt === "dora" && archName.startsWith("rms")) continue
      it(`${archName}, ${adapt === "none" ? "plain" : adapt}: same greedy tokens, logits within 1e-4 of cpu (single stream and a padded batch)`, async () => {
        for (const ps of [[prompts[0]], prompts]) {
          await tf.setBackend("cpu")
          const ref = makeModel(arch, adapt)
          const want = decodeLogits(ref.model, ps, 14, true)
          ref.model.dispose(); ref.loras.forEach((l) => l.dispose())
          await tf.setBackend("native")
          const nat = makeModel(arch, adapt)
          const got = decodeLogits(nat.model, ps, 14, true)
          const unfused = decodeLogits(nat.model, ps, 14, false)
          expect(got.usedNative).toBe(true)
          expect(unfused.usedNative).toBe(false)
          expect(got.tokens).toEqual(want.tokens)
          expect(unfused.tokens).toEqual(want.tokens)
          let worst = 0
          for (let s = 0; s < want.logits.length; s++)
            for (let i = 0; i < want.logits[s].length; i++) worst = Math.max(worst, Math.abs(got.logits[s][i] - want.logits[s][i]))
          console.log(`${archName} ${adapt} B=${ps.length}: max |Δlogits| fused native vs cpu ${worst.toExponential(2)} over ${want.logits.length} steps`)
          expect(worst).toBeLessThan(1e-4)
          // generateTokens takes the same path
          const gen = [...generateTokens(nat.model, ps, { maxTokens: 10, temperature: 0, stopAtEos: false })]
          expect(gen.map((row) => row.map((t) => t!))).toEqual(Array.from({ length: 10 }, (_, n) => want.tokens.map((r) => r[n])))
          nat.model.dispose(); nat.loras.forEach((l) => l.dispose())
        }
      }, 120_000)
    }
  }

  it("a prompt in one call: the hidden states of every position match cpu (rows of a batch without padding)", async () => {
    for (const arch of Object.values(ARCHS)) {
      const prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]]
      const run = async (backend: string) => {
        await tf.setBackend(backend)
        const { model } = makeModel(arch, "none")
        const cache = new KVCache(model.config.nLayers)
        const out = tf.tidy(() => model.head(model.hidden(tf.tensor2d(prompts.flat(), [2, 8], "int32"), { cache }))) // (16, V)
        const used = cache.native !== undefined
        const d = out.dataSync().slice()
        out.dispose(); cache.dispose(); model.dispose()
        return { d, used }
      }
      const want = await run("cpu")
      const got = await run("native")
      expect(got.used).toBe(true)
      let worst = 0
      for (let i = 0; i < want.d.length; i++) worst = Math.max(worst, Math.abs(got.d[i] - want.d[i]))
      expect(worst).toBeLessThan(1e-4)
    }
  }, 120_000)

  it("re-merges when an adapter changes, and falls back (with a log line) for a non-affine override", async () => {
    await tf.setBackend("native")
    const arch = ARCHS["layernorm learned tied bias"]
    const { model, loras } = makeModel(arch, "lora")
    const a = decodeLogits(model, [[1, 2, 3]], 4, true)
    for (const l of loras) l.B.assign(tf.mul(l.B, 10)) // e.g. training the adapter between requests
    const b = decodeLogits(model, [[1, 2, 3]], 4, true)
    const c = decodeLogits(model, [[1, 2, 3]], 4, false)
    expect(b.usedNative).toBe(true)
    let diffAB = 0, diffBC = 0
    for (let i = 0; i < a.logits[0].length; i++) {
      diffAB = Math.max(diffAB, Math.abs(a.logits[0][i] - b.logits[0][i]))
      diffBC = Math.max(diffBC, Math.abs(b.logits[0][i] - c.logits[0][i]))
    }
    expect(diffAB).toBeGreaterThan(100 * diffBC) // the change is seen…
    expect(diffBC).toBeLessThan(1e-4) // …and matches the tfjs path
    loras.forEach((l) => (l.training = true)) // dropout: not an affine map any more
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {})
    const d = decodeLogits(model, [[1, 2, 3]], 2, true)
    expect(d.usedNative).toBe(false)
    expect(warn.mock.calls.map((c) => String(c[0])).join("\n")).toMatch(/fused native decode not used: the override of h\.0\.attn\.q_proj is not an affine map/)
    warn.mockRestore()
    model.dispose(); loras.forEach((l) => l.dispose())
  }, 120_000)

  it("a cache started on the fused path continues on tfjs ops when the fused path stops applying", async () => {
    await tf.setBackend("native")
    const arch = ARCHS["rmsnorm rope untied no-bias"]
    const { model } = makeModel(arch, "none")
    const ref = decodeLogits(model, [[4, 5, 6], [1, 2, 3]], 5, false)
    const cache = new KVCache(model.config.nLayers, [0, 0])
    const run = (feed: number[][], fused: boolean) => {
      const out = tf.tidy(() => model.head(model.hidden(tf.tensor2d(feed.flat(), [2, feed[0].length], "int32"), { cache, fused })))
      const d = out.dataSync().slice()
      out.dispose()
      return d
    }
    run([[4, 5, 6], [1, 2, 3]], true)
    expect(cache.native).toBeDefined()
    process.env.MOA_FUSED_DECODE = "0"
    try {
      const V = model.config.vocabSize
      const l = run(ref.tokens.map((r) => [r[0]]), true)
      expect(cache.native).toBeUndefined()
      expect(cache.k[0]?.shape).toEqual([2, 4, 4, 8])
      let worst = 0
      for (let i = 0; i < 2 * V; i++) worst = Math.max(worst, Math.abs(l[i] - ref.logits[1][i]))
      expect(worst).toBeLessThan(1e-4)
    } finally {
      delete process.env.MOA_FUSED_DECODE
      cache.dispose()
      model.dispose()
    }
  }, 120_000)
})
