import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { hftCategories, hftTrainable } from "../src/peft/hft.ts"
import { QuantizedLinear, dequantize, quantize, quantizedBytes } from "../src/peft/quant.ts"

describe("int8 / 4-bit quantisation", () => {
  const I = 64
  const O = 48
  const w = tf.randomNormal([I, O], 0, 0.2, "float32", 9).dataSync() as Float32Array
  for (const [bits, tol, ratio] of [[8, 0.01, 3.5], [4, 0.15, 6]] as const) {
    it(`${bits}-bit round-trips within its step size and is ${ratio}× smaller`, () => {
      const q = quantize(w, I, O, bits)
      const d = dequantize(q)
      let maxRel = 0
      for (let i = 0; i < w.length; i++) maxRel = Math.max(maxRel, Math.abs(d[i]! - w[i]!))
      const absmax = Math.max(...Array.from(w, Math.abs))
      expect(maxRel / absmax).toBeLessThan(tol)
      expect(w.byteLength / quantizedBytes(q)).toBeGreaterThan(ratio)
    })
  }

  it("a quantised linear computes x·deq(W)+b", () => {
    const q = quantize(w, I, O, 8)
    const x = tf.randomNormal([3, I], 0, 1, "float32", 1) as tf.Tensor2D
    const bias = tf.ones([O]) as tf.Tensor1D
    const W = tf.tensor2d(w, [I, O])
    const y = new QuantizedLinear(q, undefined).forward(x, { weight: W, bias, base: (z) => tf.add(tf.matMul(z, W), bias) as tf.Tensor2D })
    const ref = tf.add(tf.matMul(x, tf.tensor2d(dequantize(q), [I, O])), bias)
    expect(tf.max(tf.abs(tf.sub(y, ref))).dataSync()[0]).toBeLessThan(1e-5)
  })
})

describe("Half Fine-Tuning schedule", () => {
  const names = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"]
  for (let i = 0; i < 2; i++)
    for (const m of ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.fc_in", "mlp.fc_out", "ln_1", "ln_2"]) names.push(`h.${i}.${m}.weight`, `h.${i}.${m}.bias`)

  it("trains exactly half of each even category, weight and bias together, a new half each round", () => {
    const cats = hftCategories(names)
    expect(cats.get("h.0.attn")).toEqual(["h.0.attn.k_proj", "h.0.attn.o_proj", "h.0.attn.q_proj", "h.0.attn.v_proj"])
    expect(cats.get("outer")).toEqual(["ln_f", "wpe", "wte"])
    const rounds = [0, 1, 2, 3, 4, 5].map((r) => new Set(hftTrainable(names, r, 1)))
    for (const t of rounds) {
      for (const blk of [0, 1]) {
        expect([...t].filter((p) => p.startsWith(`h.${blk}.attn.`) && p.endsWith(".weight")).length).toBe(2)
        expect([...t].filter((p) => p.startsWith(`h.${blk}.mlp.`) && p.endsWith(".weight")).length).toBe(1)
        expect([...t].filter((p) => /^h\.\d\.ln_/.test(p) && p.startsWith(`h.${blk}.`) && p.endsWith(".weight")).length).toBe(1)
      }
      for (const p of t) if (p.endsWith(".weight") && p !== "wte.weight" && p !== "wpe.weight") expect(t.has(p.replace(/weight$/, "bias"))).toBe(true)
    }
    expect(rounds.some((t) => [...t].join() !== [...rounds[0]!].join())).toBe(true)
    expect(hftTrainable(names, 3, 1)).toEqual(hftTrainable(names, 3, 1))
  })
})
