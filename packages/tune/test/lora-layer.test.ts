import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { LoraLayer, loraScaling } from "../src/peft/lora.ts"
import { selectTargets } from "../src/peft/hook.ts"

const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!)

/** A bare linear layer y = x W + b run through an override, like the model's hook does. */
const linear = (w: tf.Variable<tf.Rank.R2>, bias: tf.Tensor1D) => ({
  weight: w as tf.Tensor2D,
  bias,
  base: (x: tf.Tensor2D) => tf.add(tf.matMul(x, w), bias) as tf.Tensor2D,
})

describe("LoRA / DoRA layer", () => {
  for (const dora of [false, true]) {
    it(`${dora ? "DoRA" : "LoRA"}: merge equals the adapted forward, unmerge restores the base`, () => {
      const w = tf.variable(tf.randomNormal([6, 5], 0, 0.5, "float32", 1)) as tf.Variable<tf.Rank.R2>
      const w0 = w.clone()
      const b = tf.randomNormal([5], 0, 0.1, "float32", 2) as tf.Tensor1D
      const x = tf.randomNormal([4, 6], 0, 1, "float32", 3) as tf.Tensor2D
      const layer = new LoraLayer("t", 6, 5, { r: 2, alpha: 4, dora, seed: 4 })
      layer.initMagnitude(w)
      // a trained-looking adapter: B non-zero, m perturbed
      layer.B.assign(tf.randomNormal([2, 5], 0, 0.3, "float32", 5) as tf.Tensor2D)
      if (dora) layer.magnitude!.assign(tf.mul(layer.magnitude!, tf.randomUniform([5], 0.5, 1.5, "float32", 6)) as tf.Tensor1D)
      const ctx = linear(w, b)
      const adapted = layer.forward(x, ctx)
      const plain = ctx.base(x)
      expect(maxAbsDiff(adapted, plain)).toBeGreaterThan(1e-2) // the adapter does something
      layer.merge(w)
      expect(maxAbsDiff(ctx.base(x), adapted)).toBeLessThan(1e-5)
      expect(maxAbsDiff(layer.forward(x, ctx), adapted)).toBeLessThan(1e-5)
      layer.unmerge(w)
      expect(maxAbsDiff(w, w0)).toBeLessThan(1e-5)
      expect(maxAbsDiff(layer.forward(x, ctx), adapted)).toBeLessThan(1e-5)
    })
  }

  it("starts as the identity and gets gradients on A, B and m only", () => {
    const w = tf.variable(tf.randomNormal([3, 3], 0, 1, "float32", 1)) as tf.Variable<tf.Rank.R2>
    const layer = new LoraLayer("t", 3, 3, { r: 1, alpha: 1, dora: true })
    layer.initMagnitude(w)
    const x = tf.randomNormal([2, 3], 0, 1, "float32", 2) as tf.Tensor2D
    const ctx = { weight: w as tf.Tensor2D, base: (x: tf.Tensor2D) => tf.matMul(x, w) as tf.Tensor2D }
    expect(maxAbsDiff(layer.forward(x, ctx), ctx.base(x))).toBeLessThan(1e-5)
    const { grads } = tf.variableGrads(() => tf.sum(tf.square(layer.forward(x, ctx))) as tf.Scalar, layer.variables())
    expect(Object.keys(grads).sort()).toEqual(["A", "B", "magnitude_vector"].map((k) => `${layer.id}.lora_${k}`))
    expect(tf.sum(tf.abs(grads[layer.B.name]!)).dataSync()[0]).toBeGreaterThan(0)
  })

  it("scales by alpha/r, or alpha/√r with rsLoRA", () => {
    expect(loraScaling({ r: 4, alpha: 8 })).toBe(2)
    expect(loraScaling({ r: 4, alpha: 8, rslora: true })).toBe(4)
    expect(() => new LoraLayer("t", 2, 2, { r: 0, alpha: 1 })).toThrow(/rank/)
  })

  it("selects target modules by pattern and names what exists when nothing matches", () => {
    const names = ["h.0.attn.q_proj", "h.0.attn.k_proj", "h.0.attn.v_proj", "h.0.attn.o_proj", "h.0.mlp.fc_in", "h.0.mlp.fc_out", "h.1.attn.q_proj", "h.1.attn.v_proj"]
    expect(selectTargets(names, ["q", "v"])).toEqual(["h.0.attn.q_proj", "h.0.attn.v_proj", "h.1.attn.q_proj", "h.1.attn.v_proj"])
    expect(selectTargets(names, ["mlp_in", "mlp_out"])).toEqual(["h.0.mlp.fc_in", "h.0.mlp.fc_out"])
    expect(selectTargets(names, ["/^h\\.1\\./"])).toEqual(["h.1.attn.q_proj", "h.1.attn.v_proj"])
    expect(selectTargets(names, ["all"]).length).toBe(8)
    expect(() => selectTargets(names, ["gate_proj"])).toThrow(/"gate_proj" matches no linear layer.*h\.<i>\.attn\.q_proj/)
  })
})
