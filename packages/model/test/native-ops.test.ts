// The native backend's fused training ops (src/native/ops.ts) against the model's tfjs
// composition on the `cpu` backend: values and gradients (tf.grads with the same upstream
// gradient) within 1e-5 of the tensor's scale, on the 0.81M model's shapes (batch 2).
import * as tf from "@tensorflow/tfjs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as native from "../src/native/index.js"
import { fusedOps } from "../src/native/ops.js"

const built = native.available()
if (!built) console.warn(`[native-ops.test] SKIPPED: native addon not available — ${native.reason()}`)

const rnd = (shape: number[], seed: number, lo = -2, hi = 2) => tf.randomUniform(shape, lo, hi, "float32", seed)

/** values and gradients of f(inputs) on cpu (reference) and on native (fused) */
async function compare(
  name: string,
  shapes: number[][],
  ref: (...xs: tf.Tensor[]) => tf.Tensor,
  fused: (...xs: tf.Tensor[]) => tf.Tensor,
) {
  const data = shapes.map((s, i) => rnd(s, 10 + i).dataSync().slice())
  const run = async (backend: string, f: (...xs: tf.Tensor[]) => tf.Tensor) => {
    await tf.setBackend(backend)
    return tf.tidy(() => {
      const xs = shapes.map((s, i) => tf.tensor(data[i], s))
      const y = f(...xs)
      const dy = rnd(y.shape, 99)
      const grads = tf.grads((...a: tf.Tensor[]) => f(...a))(xs, dy)
      return [y, ...grads].map((t) => t.dataSync().slice() as Float32Array)
    })
  }
  const want = await run("cpu", ref)
  const got = await run("native", fused)
  want.forEach((w, k) => {
    let scale = 1e-12, worst = 0
    for (let i = 0; i < w.length; i++) scale = Math.max(scale, Math.abs(w[i]))
    for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(w[i] - got[k][i]))
    expect(worst / scale, `${name}: ${k === 0 ? "value" : `gradient ${k - 1}`} (max |Δ| ${worst.toExponential(2)}, scale ${scale.toExponential(2)})`).toBeLessThan(1e-5)
  })
}

const causal = (T: number, Tk: number) => {
  const a = new Float32Array(T * Tk)
  for (let i = 0; i < T; i++) for (let j = 0; j < Tk; j++) if (j > Tk - T + i) a[i * Tk + j] = -1e9
  return tf.tensor2d(a, [T, Tk])
}

describe.skipIf(!built)("fused native training ops vs the tfjs composition on cpu", () => {
  let ops: NonNullable<ReturnType<typeof fusedOps>>
  beforeAll(async () => {
    await native.register()
    await tf.setBackend("native")
    ops = fusedOps()!
    expect(ops).toBeDefined()
  })
  afterAll(async () => {
    await tf.setBackend("cpu")
  })

  it("fusedOps() is undefined off the native backend", async () => {
    await tf.setBackend("cpu")
    expect(fusedOps()).toBeUndefined()
  })

  it("GELU (sigmoid form) on the MLP's (B*T, 4C)", async () => {
    await compare("gelu", [[128, 512]], (h) => tf.mul(h, tf.sigmoid(tf.mul(h, 1.702))), (h) => ops.gelu(h))
  })

  it("LayerNorm on (B*T, C), gradients for x, weight and bias", async () => {
    const ref = (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => {
      const mu = tf.mean(x, -1, true)
      const xc = tf.sub(x, mu)
      return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), 1e-5))), w), b)
    }
    await compare("layernorm", [[128, 128], [128], [128]], ref, (x, w, b) => ops.layerNorm(x as tf.Tensor2D, w as tf.Tensor1D, b as tf.Tensor1D))
  })

  it("RMSNorm on (B*T, C), gradients for x and weight", async () => {
    const ref = (x: tf.Tensor, w: tf.Tensor) => tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), 1e-5))), w)
    await compare("rmsnorm", [[128, 128], [128]], ref, (x, w) => ops.rmsNorm(x as tf.Tensor2D, w as tf.Tensor1D))
  })

  it("scaled causal softmax on (B, nh, T, T), and unmasked for one query over a cache", async () => {
    const s = 1 / Math.sqrt(32)
    const mask = causal(64, 64)
    await compare("causal softmax", [[2, 4, 64, 64]], (x) => tf.softmax(tf.add(tf.mul(x, s), mask)), (x) => ops.causalSoftmax(x, s, true))
    await compare("softmax T=1", [[2, 4, 1, 17]], (x) => tf.softmax(tf.mul(x, s)), (x) => ops.causalSoftmax(x, s, false))
    mask.dispose()
  })

  it("linear x·W + b in one kernel: output and gradients for x, W, b; without bias; only the gradients asked for", async () => {
    expect(ops.linear).toBeDefined()
    await compare("linear", [[128, 128], [128, 512], [512]], (x, w, b) => tf.add(tf.matMul(x, w), b),
      (x, w, b) => ops.linear!(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D))
    await compare("linear, no bias", [[128, 512], [512, 128]], (x, w) => tf.matMul(x, w),
      (x, w) => ops.linear!(x as tf.Tensor2D, w as tf.Tensor2D))
    // a frozen weight (LoRA's base): the gradient of x alone runs one product, not two
    await tf.setBackend("native")
    const x = rnd([64, 32], 1), w = rnd([32, 48], 2), b = rnd([48], 3)
    const info = await tf.profile(() => tf.grad((xi: tf.Tensor) => tf.sum(ops.linear!(xi as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D)))(x))
    expect(info.kernels.filter((k) => k.name === "BatchMatMul").length).toBe(1)
    expect((info.result as tf.Tensor).shape).toEqual([64, 32])
    tf.dispose([x, w, b, info.result as tf.Tensor])
  })

  it("causal self-attention from the (B*T, C) projections: output and gradients for q, k, v", async () => {
    const B = 2, T = 64, nh = 4, hs = 32, C = nh * hs, s = 1 / Math.sqrt(hs)
    const mask = causal(T, T)
    const heads = (t: tf.Tensor) => tf.transpose(tf.reshape(t, [B, T, nh, hs]), [0, 2, 1, 3])
    const ref = (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => {
      const att = tf.softmax(tf.add(tf.matMul(tf.mul(heads(q), s), heads(k), false, true), mask))
      return tf.reshape(tf.transpose(tf.matMul(att, heads(v)), [0, 2, 1, 3]), [B * T, C])
    }
    expect(ops.attention).toBeDefined()
    await compare("attention", [[B * T, C], [B * T, C], [B * T, C]], ref,
      (q, k, v) => ops.attention!(q as tf.Tensor2D, k as tf.Tensor2D, v as tf.Tensor2D, B, T, nh, s))
    mask.dispose()
  })
})
