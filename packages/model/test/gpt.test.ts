import * as tf from "@tensorflow/tfjs"
import { beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../src/backend.js"
import { generate } from "../src/generate.js"
import { GPT, KVCache, makeConfig, type GPTConfig } from "../src/gpt.js"
import { CharTokenizer } from "../src/tokenizer.js"
import { train } from "../src/train.js"

beforeAll(async () => {
  await initBackend("wasm")
})

const small = (over: Partial<GPTConfig> = {}) =>
  makeConfig({ vocabSize: 13, contextLength: 16, dModel: 16, nLayers: 2, nHeads: 4, ...over })

describe("GPT", () => {
  it("has the contract's parameter names and shapes", () => {
    const m = new GPT(small({ tiedEmbeddings: false, norm: "layernorm", bias: true }))
    const shapes = Object.fromEntries([...m.params].map(([n, v]) => [n, v.shape]))
    expect(shapes["wte.weight"]).toEqual([13, 16])
    expect(shapes["wpe.weight"]).toEqual([16, 16])
    expect(shapes["h.1.ln_1.bias"]).toEqual([16])
    expect(shapes["h.0.attn.q_proj.weight"]).toEqual([16, 16]) // [in, out] in memory
    expect(shapes["h.0.mlp.fc_in.weight"]).toEqual([16, 64])
    expect(shapes["h.0.mlp.fc_out.bias"]).toEqual([16])
    expect(shapes["lm_head.weight"]).toEqual([16, 13])
    expect(m.linearNames()).toEqual([
      "h.0.attn.q_proj", "h.0.attn.k_proj", "h.0.attn.v_proj", "h.0.attn.o_proj", "h.0.mlp.fc_in", "h.0.mlp.fc_out",
      "h.1.attn.q_proj", "h.1.attn.k_proj", "h.1.attn.v_proj", "h.1.attn.o_proj", "h.1.mlp.fc_in", "h.1.mlp.fc_out", "lm_head",
    ])
    const r = new GPT(small({ position: "rope", norm: "rmsnorm", bias: false }))
    expect(r.params.has("wpe.weight")).toBe(false)
    expect(r.params.has("h.0.ln_1.bias")).toBe(false)
    expect(r.params.has("h.0.attn.q_proj.bias")).toBe(false)
    m.dispose()
    r.dispose()
  })

  it("rejects bad configs with the field named", () => {
    expect(() => makeConfig({ vocabSize: 10, dModel: 30, nHeads: 4 })).toThrow(/dModel.*divisible by nHeads/)
    expect(() => makeConfig({ vocabSize: 0 })).toThrow(/vocabSize/)
    expect(() => makeConfig({ vocabSize: 5, norm: "batchnorm" as any })).toThrow(/norm/)
    expect(() => makeConfig({ vocabSize: 5, nLayer: 3 } as any)).toThrow(/no field "nLayer"/)
  })

  it("is causal: changing a later token does not change earlier logits", () => {
    for (const position of ["learned", "rope"] as const) {
      const m = new GPT(small({ position }))
      const a = tf.tidy(() => m.forward(tf.tensor2d([[1, 4, 5, 6, 7]], [1, 5], "int32")).arraySync())
      const b = tf.tidy(() => m.forward(tf.tensor2d([[1, 4, 5, 9, 9]], [1, 5], "int32")).arraySync())
      expect(a[0].slice(0, 3)).toEqual(b[0].slice(0, 3))
      expect(a[0][4]).not.toEqual(b[0][4])
      m.dispose()
    }
  })

  it("a KV-cached forward gives the same logits as the full forward", () => {
    for (const position of ["learned", "rope"] as const) {
      const m = new GPT(small({ position }))
      const ids = [1, 4, 5, 6, 7, 8]
      const full = tf.tidy(() => m.forward(tf.tensor2d([ids], [1, 6], "int32")).arraySync()[0])
      const cache = new KVCache(2)
      const first = tf.tidy(() => m.forward(tf.tensor2d([ids.slice(0, 3)], [1, 3], "int32"), { cache }).arraySync()[0])
      const rest = ids.slice(3).map((t) => tf.tidy(() => m.forward(tf.tensor2d([[t]], [1, 1], "int32"), { cache }).arraySync()[0][0]))
      cache.dispose()
      const inc = [...first, ...rest]
      for (let t = 0; t < 6; t++) for (let v = 0; v < 13; v++) expect(inc[t][v]).toBeCloseTo(full[t][v], 4)
      m.dispose()
    }
  })

  it("log-probs of completions match a manual computation from the logits", () => {
    const m = new GPT(small())
    const prompts = [[1, 4, 5], [1, 6]]
    const completions = [[7, 2], [8, 9, 2]]
    const got = m.logProbs(prompts, completions)
    for (let b = 0; b < 2; b++) {
      const seq = [...prompts[b], ...completions[b]]
      const logits = tf.tidy(() => m.forward(tf.tensor2d([seq], [1, seq.length], "int32")).arraySync()[0])
      let want = 0
      for (let t = prompts[b].length; t < seq.length; t++) {
        const row = logits[t - 1]
        const max = Math.max(...row)
        const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0))
        want += row[seq[t]] - lse
      }
      expect(got[b]).toBeCloseTo(want, 4)
    }
    // the tensor version is differentiable (usable in a DPO loss)
    const g = tf.tidy(() => {
      const ids = tf.tensor2d([[1, 4, 5, 7, 2]], [1, 5], "int32")
      const mask = tf.tensor2d([[0, 0, 0, 1, 1]], [1, 5])
      const { grads } = tf.variableGrads(() => tf.sum(m.sequenceLogProbs(ids, mask)) as tf.Scalar, [m.params.get("wte.weight")!])
      return Object.values(grads)[0].abs().sum().arraySync() as number
    })
    expect(g).toBeGreaterThan(0)
    m.dispose()
  })

  it("linear overrides are applied to the named layer (the PEFT hook)", () => {
    const m = new GPT(small())
    const ids = tf.tensor2d([[1, 4, 5]], [1, 3], "int32")
    const base = tf.tidy(() => m.forward(ids).arraySync())
    let calls = 0
    m.setLinearOverride("h.0.mlp.fc_in", {
      forward: (x, ctx) => {
        calls++
        expect(ctx.weight.shape).toEqual([16, 64])
        return tf.mul(ctx.base(x), 0) as tf.Tensor2D
      },
    })
    const changed = tf.tidy(() => m.forward(ids).arraySync())
    expect(calls).toBe(1)
    expect(changed).not.toEqual(base)
    m.setLinearOverride("h.0.mlp.fc_in", undefined)
    expect(tf.tidy(() => m.forward(ids).arraySync())).toEqual(base)
    expect(() => m.setLinearOverride("nope", undefined)).toThrow(/linearNames/)
    ids.dispose()
    m.dispose()
  })

  it("no tensor leaks across training steps and generations", async () => {
    const tok = CharTokenizer.train("abcd", { byteFallback: false })
    const m = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 16, dModel: 16, nLayers: 1, nHeads: 2, dropout: 0.1, position: "rope" }))
    const ex = [{ ids: [1, 4, 5, 3, 5, 4, 2] }, { ids: [1, 6, 3, 6, 2] }]
    const run = async () => {
      await train({ model: m, train: ex, config: { steps: 3, batchSize: 2, gradAccum: 2, warmupSteps: 1 } })
      generate(m, tok, ["ab", "abcd"], { maxTokens: 4 })
      generate(m, tok, ["ab"], { maxTokens: 4, cache: false, temperature: 1, topK: 3 })
    }
    await run() // warm-up: fills the causal-mask cache
    const before = tf.memory().numTensors
    await run()
    await run()
    expect(tf.memory().numTensors).toBe(before)
    m.dispose()
  })
})
