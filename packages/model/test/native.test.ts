// Every kernel the native backend replaces, against the pure-JS `cpu` backend, on the shapes
// of the 0.81M model (d128, 4 heads of 32, T64, MLP 512, vocab 128) with batch 2 instead of 16
// (N = B·T = 128 rows) so the slow cpu reference stays fast: values and gradients.
import * as tf from "@tensorflow/tfjs"
import { beforeAll, describe, expect, it } from "vitest"
import * as native from "../src/native/index.js"

const built = native.available()
if (!built) console.warn(`[native.test] SKIPPED: native addon not available — ${native.reason()}`)

type Fn = (...xs: tf.Tensor[]) => tf.Tensor

/** Runs fn on `backend` with fresh copies of the inputs; returns output values and gradients. */
async function runOn(backend: string, fn: Fn, inputs: { data: Float32Array | Int32Array; shape: number[]; dtype: tf.DataType }[], grad: boolean) {
  await new Promise((r) => setImmediate(r)) // let vitest's worker RPC through on a busy machine
  await tf.setBackend(backend)
  return tf.tidy(() => {
    const xs = inputs.map((i) => tf.tensor(i.data, i.shape, i.dtype))
    const y = fn(...xs)
    const out = { y: y.dataSync().slice(), shape: y.shape, dtype: y.dtype, grads: [] as Float32Array[] }
    if (grad) {
      const dy = tf.randomNormal(y.shape, 0, 1, "float32", 7) // same seed on both backends
      const fi = xs.map((x, i) => (x.dtype === "float32" ? i : -1)).filter((i) => i >= 0)
      const g = tf.grads((...a: tf.Tensor[]) => fn(...xs.map((x, i) => (fi.includes(i) ? a[fi.indexOf(i)] : x))))(fi.map((i) => xs[i]), dy)
      out.grads = g.map((t) => t.dataSync().slice() as Float32Array)
    }
    return out
  })
}

/** |a-b| ≤ 1e-5 · max|b| elementwise (relative to the tensor's scale). */
function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, what: string, rel = 1e-5) {
  expect(a.length, what).toBe(b.length)
  let scale = 0
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]))
  let worst = 0, at = -1
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i])
    if (!(d <= worst)) { worst = d; at = i }
  }
  expect(worst, `${what}: max |native-cpu| ${worst} at ${at} (scale ${scale})`).toBeLessThanOrEqual(rel * Math.max(scale, 1e-6))
}

let seed = 1
const rnd = (shape: number[], std = 1) => ({ data: tf.tidy(() => tf.randomNormal(shape, 0, std, "float32", seed++).dataSync() as Float32Array), shape, dtype: "float32" as const })

async function check(name: string, fn: Fn, inputs: ReturnType<typeof rnd>[] | { data: Int32Array; shape: number[]; dtype: "int32" }[], grad = true) {
  const ref = await runOn("cpu", fn, inputs as never, grad)
  const got = await runOn("native", fn, inputs as never, grad)
  expect(got.shape, `${name} shape`).toEqual(ref.shape)
  expect(got.dtype, `${name} dtype`).toBe(ref.dtype)
  expectClose(got.y, ref.y, `${name} value`)
  for (let i = 0; i < ref.grads.length; i++) expectClose(got.grads[i], ref.grads[i], `${name} grad ${i}`)
}

describe.skipIf(!built)("native backend kernels vs cpu (model shapes)", { timeout: 300_000 }, () => {
  beforeAll(async () => {
    await native.register()
    await tf.setBackend("native")
    expect(tf.getBackend()).toBe("native")
  })

  it("BatchMatMul: linear layers, weight gradients, attention products", async () => {
    await check("x@W [128,128]x[128,512]", (x, w) => tf.matMul(x, w), [rnd([128, 128]), rnd([128, 512], 0.02)])
    await check("x@W [128,512]x[512,128]", (x, w) => tf.matMul(x, w), [rnd([128, 512]), rnd([512, 128], 0.02)])
    await check("xᵀ@dy", (x, g) => tf.matMul(x, g, true, false), [rnd([128, 128]), rnd([128, 512])])
    await check("dy@Wᵀ", (g, w) => tf.matMul(g, w, false, true), [rnd([128, 512]), rnd([128, 512])])
    await check("logits x@wteᵀ", (x, w) => tf.matMul(x, w, false, true), [rnd([128, 128]), rnd([128, 128])])
    await check("Q·Kᵀ [2,4,64,32]", (q, k) => tf.matMul(q, k, false, true), [rnd([2, 4, 64, 32]), rnd([2, 4, 64, 32])])
    await check("att·V", (a, v) => tf.matMul(a, v), [rnd([2, 4, 64, 64]), rnd([2, 4, 64, 32])])
    await check("attᵀ·dy (both transposed)", (a, v) => tf.matMul(a, v, true, true), [rnd([2, 4, 64, 64]), rnd([2, 4, 32, 64])])
    await check("3-D × 2-D broadcast (tfjs has no gradient for it)", (x, w) => tf.matMul(x, w), [rnd([2, 64, 128]), rnd([128, 128])], false)
    await check("2-D × 3-D broadcast", (w, x) => tf.matMul(w, x), [rnd([64, 64]), rnd([8, 64, 32])], false)
    await check("KV-cache decode [4,4,1,32]·[4,4,37,32]ᵀ", (q, k) => tf.matMul(q, k, false, true), [rnd([4, 4, 1, 32]), rnd([4, 4, 37, 32])])
  })

  it("broadcasting binary ops: bias, layer norm, mask, scalars", async () => {
    for (const [name, f] of [["add", tf.add], ["sub", tf.sub], ["mul", tf.mul], ["div", tf.div], ["maximum", tf.maximum], ["minimum", tf.minimum], ["squaredDifference", tf.squaredDifference]] as const) {
      await check(`${name} same shape`, (a, b) => f(a, b), [rnd([128, 512]), rnd([128, 512])], name !== "maximum" && name !== "minimum")
      await check(`${name} bias [128,512]+[512]`, (a, b) => f(a, b), [rnd([128, 512]), rnd([512])], name !== "maximum" && name !== "minimum" && name !== "squaredDifference")
    }
    await check("x - mean [128,128]-[128,1]", (a, b) => tf.sub(a, b), [rnd([128, 128]), rnd([128, 1])])
    await check("x / std [128,128]/[128,1]", (a, b) => tf.div(a, tf.add(tf.abs(b), 0.5)), [rnd([128, 128]), rnd([128, 1])])
    await check("scores + mask [2,4,64,64]+[64,64]", (a, b) => tf.add(a, b), [rnd([2, 4, 64, 64]), rnd([64, 64])])
    await check("tok + pos [2,64,128]+[64,128]", (a, b) => tf.add(a, b), [rnd([2, 64, 128]), rnd([64, 128])])
    await check("scalar · x", (a) => tf.mul(a, 1.702), [rnd([128, 512])])
    await check("scalar - x", (a) => tf.sub(1, a), [rnd([128, 512])])
    await check("outer [4,1,8]*[1,6,1]", (a, b) => tf.mul(a, b), [rnd([4, 1, 8]), rnd([1, 6, 1])])
    await check("int32 add falls back to cpu", (a, b) => tf.add(a, b), [
      { data: Int32Array.from({ length: 64 }, (_, i) => i), shape: [8, 8], dtype: "int32" },
      { data: Int32Array.from({ length: 8 }, (_, i) => 3 * i), shape: [8], dtype: "int32" },
    ], false)
  })

  it("unary ops incl. GELU x·sigmoid(1.702x) and AddN", async () => {
    const x = rnd([128, 512])
    await check("gelu", (u) => tf.mul(u, tf.sigmoid(tf.mul(u, 1.702))), [x])
    for (const [name, f] of [["exp", tf.exp], ["sigmoid", tf.sigmoid], ["tanh", tf.tanh], ["neg", tf.neg], ["square", tf.square], ["abs", tf.abs], ["relu", tf.relu], ["softplus", tf.softplus]] as const) {
      await check(name, (a) => f(a), [x], name !== "abs" && name !== "relu")
    }
    await check("log", (a) => tf.log(tf.add(tf.abs(a), 0.1)), [x])
    await check("sqrt", (a) => tf.sqrt(tf.add(tf.abs(a), 0.1)), [x])
    await check("rsqrt", (a) => tf.rsqrt(tf.add(tf.abs(a), 0.1)), [x])
    await check("reciprocal", (a) => tf.reciprocal(tf.add(tf.abs(a), 0.1)), [x])
    await check("addN", (a, b, c) => tf.addN([a, b, c]), [rnd([128, 128]), rnd([128, 128]), rnd([128, 128])])
  })

  it("softmax, logSoftmax, reductions, layer norm", async () => {
    await check("softmax [2,4,64,64]", (a) => tf.softmax(a), [rnd([2, 4, 64, 64], 3)])
    const mask = { data: Float32Array.from({ length: 64 * 64 }, (_, i) => (i % 64 > Math.floor(i / 64) ? -1e9 : 0)), shape: [64, 64], dtype: "float32" as const }
    await check("causally masked softmax", (a, m) => tf.softmax(tf.add(a, m)), [rnd([2, 4, 64, 64]), mask])
    await check("logSoftmax [128,128]", (a) => tf.logSoftmax(a), [rnd([128, 128], 3)])
    await check("mean -1 keepDims", (a) => tf.mean(a, -1, true), [rnd([128, 128])])
    await check("sum axis 0 (bias grad)", (a) => tf.sum(a, 0), [rnd([128, 512])])
    await check("sum [0,1] of [2,64,128]", (a) => tf.sum(a, [0, 1]), [rnd([2, 64, 128])])
    await check("sum all", (a) => tf.sum(a), [rnd([128, 128])])
    await check("sum axis 1 of 3-D", (a) => tf.sum(a, 1, true), [rnd([2, 64, 128])])
    await check("max -1", (a) => tf.max(a, -1), [rnd([128, 128])], false)
    await check("max axis 0", (a) => tf.max(a, 0), [rnd([128, 128])], false)
    await check("min -1", (a) => tf.min(a, -1), [rnd([128, 128])], false)
    await check("sum over non-contiguous axes falls back", (a) => tf.sum(a, [0, 2]), [rnd([4, 6, 8])])
    await check("layer norm", (x, w, b) => {
      const mean = tf.mean(x, -1, true)
      const xc = tf.sub(x, mean)
      return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), 1e-5))), w), b)
    }, [rnd([128, 128]), rnd([128]), rnd([128])])
  })

  it("transpose, embedding gather and its gradient", async () => {
    await check("heads [2,64,4,32]→[2,4,64,32]", (a) => tf.transpose(a, [0, 2, 1, 3]), [rnd([2, 64, 4, 32])])
    await check("2-D [128,512]ᵀ", (a) => tf.transpose(a), [rnd([128, 512])])
    await check("[2,3,4,5] perm [3,1,0,2]", (a) => tf.transpose(a, [3, 1, 0, 2]), [rnd([2, 3, 4, 5])])
    const ids = { data: Int32Array.from({ length: 128 }, (_, i) => (i * 37) % 128), shape: [128], dtype: "int32" as const }
    await check("gather wte[ids]", (w, i) => tf.gather(w, i), [rnd([128, 128]), ids] as never)
    await check("unsortedSegmentSum", (x, i) => tf.unsortedSegmentSum(x, i as tf.Tensor1D, 128), [rnd([128, 128]), ids] as never)
  })

  it("recycles output buffers without corrupting views, read-out arrays or live tensors", async () => {
    await tf.setBackend("native")
    const be = tf.backend() as unknown as { poolStats(): { arrays: number; bytes: number } }
    const x = tf.randomNormal([256, 64], 0, 1, "float32", 9)
    // a dataSync'd array must keep its values after the tensor is disposed and buffers are reused
    const y = tf.mul(x, 2)
    const read = y.dataSync()
    const expected = Float32Array.from(read)
    y.dispose()
    // a contiguous slice is a view into its input's buffer: it must survive the input's disposal
    const z = tf.add(x, 1)
    const view = tf.slice(z, [0, 0], [128, 64])
    const viewExpected = Float32Array.from(tf.tidy(() => tf.slice(tf.add(x, 1), [0, 0], [128, 64]).dataSync()))
    z.dispose()
    for (let i = 0; i < 20; i++) tf.tidy(() => { tf.sub(tf.mul(x, 3), tf.add(x, 5)) }) // churn same-size buffers
    expect(be.poolStats().arrays).toBeGreaterThan(0) // recycling really happens
    expect(Array.from(read)).toEqual(Array.from(expected))
    expect(Array.from(view.dataSync())).toEqual(Array.from(viewExpected))
    // results computed into recycled buffers are right
    const r = tf.tidy(() => tf.sub(tf.mul(x, 3), tf.add(x, 5)))
    const xv = x.dataSync()
    const rv = r.dataSync()
    for (let i = 0; i < xv.length; i += 97) expect(rv[i]).toBeCloseTo(3 * xv[i] - (xv[i] + 5), 5)
    for (const t of [x, view, r]) t.dispose()
  })

  it("recycles buffers across shapes that change every step (rows padded to each batch's longest)", async () => {
    await tf.setBackend("native")
    for (const n of [1024, 1025, 5000, 65_537, 368_640, 1_000_003]) {
      expect(native.poolCapacity(n)).toBeGreaterThanOrEqual(n)
      expect(native.poolCapacity(n)).toBeLessThanOrEqual(1.25 * n)
    }
    const be = tf.backend() as unknown as { poolStats(): { arrays: number; bytes: number } }
    // a step's tensors for batches of 40..47 tokens: after the first, the pool serves them all
    const step = (t: number) => tf.tidy(() => tf.sum(tf.mul(tf.add(tf.ones([64, t, 32]), 1), 2)).dataSync()[0]!)
    expect(step(40)).toBe(64 * 40 * 32 * 4)
    const before = be.poolStats().bytes
    for (let t = 41; t < 48; t++) expect(step(t)).toBe(64 * t * 32 * 4) // right values from recycled, larger arrays
    expect(be.poolStats().bytes).toBeLessThanOrEqual(before + 64 * 48 * 32 * 4 * 2)
  })

  it("adamStep matches the AdamW formula", () => {
    const n = 1000
    const p = Float32Array.from({ length: n }, (_, i) => Math.sin(i)), g = Float32Array.from({ length: n }, (_, i) => Math.cos(3 * i))
    const m = new Float32Array(n).fill(0.01), v = new Float32Array(n).fill(0.02)
    const ref = { p: Float64Array.from(p), m: Float64Array.from(m), v: Float64Array.from(v) }
    const o = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3 }
    native.adamStep(p, g, m, v, o)
    for (let i = 0; i < n; i++) {
      const mi = o.beta1 * ref.m[i] + (1 - o.beta1) * g[i]
      const vi = o.beta2 * ref.v[i] + (1 - o.beta2) * g[i] * g[i]
      const pi = ref.p[i] - o.lr * (mi / (1 - o.beta1 ** o.step)) / (Math.sqrt(vi / (1 - o.beta2 ** o.step)) + o.eps) - o.lr * o.weightDecay * ref.p[i]
      expect(Math.abs(m[i] - mi)).toBeLessThan(1e-6)
      expect(Math.abs(v[i] - vi)).toBeLessThan(1e-6)
      expect(Math.abs(p[i] - pi)).toBeLessThan(1e-5)
    }
    expect(() => native.adamStep(p, g.subarray(1), m, v, o)).toThrow(/lengths differ/)
  })

  it("adamWStepInPlace updates variables like the tensor-level AdamW (moments sharing one buffer)", async () => {
    await tf.setBackend("native")
    const o = { lr: 1e-2, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, step: 1, gradScale: 0.5 }
    const p0 = tf.randomNormal([128, 512], 0, 1, "float32", 5), g = tf.randomNormal([128, 512], 0, 1, "float32", 6)
    const p = tf.variable(p0.clone()), z = tf.zerosLike(p)
    const m = tf.variable(z), v = tf.variable(z) // same buffer, as AdamW creates them
    z.dispose()
    const before = tf.memory().numTensors
    expect(native.adamWStepInPlace(p, g, m, v, o)).toBe(true)
    expect(tf.memory().numTensors).toBe(before)
    const ref = tf.tidy(() => {
      const gs = tf.mul(g, o.gradScale)
      const m1 = tf.mul(gs, 1 - o.beta1), v1 = tf.mul(tf.square(gs), 1 - o.beta2)
      const upd = tf.div(tf.div(m1, 1 - o.beta1), tf.add(tf.sqrt(tf.div(v1, 1 - o.beta2)), o.eps))
      return [tf.sub(tf.mul(p0, 1 - o.lr * o.weightDecay), tf.mul(upd, o.lr)), m1, v1]
    })
    expectClose(p.dataSync(), ref[0].dataSync(), "param")
    expectClose(m.dataSync(), ref[1].dataSync(), "m")
    expectClose(v.dataSync(), ref[2].dataSync(), "v")
    await tf.setBackend("cpu")
    expect(native.adamWStepInPlace(p, g, m, v, o)).toBe(false) // not on native: caller falls back
    for (const t of [p0, g, p, m, v, ...ref]) t.dispose()
  })
})
