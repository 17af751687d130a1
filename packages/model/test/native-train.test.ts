// A short training run of the model package's GPT gives the same loss curve on native, wasm and cpu.
import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { GPT, makeConfig, makeTrainConfig, AdamW, maskedCrossEntropy } from "../src/index.js"
import * as native from "../src/native/index.js"
import { useBackend, type Backend } from "../bench/common.js"

const built = native.available()
if (!built) console.warn(`[native-train.test] SKIPPED: native addon not available — ${native.reason()}`)

async function lossCurve(backend: Backend, steps: number): Promise<number[]> {
  await useBackend(backend)
  expect(tf.getBackend()).toBe(backend)
  const config = makeConfig({ vocabSize: 48, contextLength: 32, dModel: 64, nLayers: 2, nHeads: 4 })
  const model = new GPT(config, { seed: 11 })
  const opt = new AdamW(model.params)
  const tc = makeTrainConfig({ lr: 3e-3, weightDecay: 0.1, beta1: 0.9, beta2: 0.99 })
  const names = [...model.params.keys()]
  const vars = names.map((n) => model.params.get(n)!)
  // a learnable sequence: each row counts up by a row-specific stride
  const B = 8, T = 32
  const rows = Array.from({ length: B }, (_, b) => Array.from({ length: T + 1 }, (_, t) => (b * 5 + t * (1 + (b % 3))) % 48))
  const ids = tf.tensor2d(rows.map((r) => r.slice(0, -1)), [B, T], "int32")
  const targets = tf.tensor1d(rows.flatMap((r) => r.slice(1)), "int32")
  const w = tf.ones([B * T]) as tf.Tensor1D
  const one = tf.scalar(1)
  let before = 0 // counted after step 1: the model caches its causal mask on first use
  const losses: number[] = []
  for (let step = 1; step <= steps; step++) {
    await new Promise((r) => setImmediate(r)) // let vitest's worker RPC through on a busy machine
    if (step === 2) before = tf.memory().numTensors
    losses.push(tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => maskedCrossEntropy(model.head(model.hidden(ids, { training: true })), targets, w), vars)
      opt.step(new Map(names.map((n, i) => [n, grads[vars[i].name]])), one, step, 3e-3, tc)
      return value.dataSync()[0]
    }))
  }
  expect(tf.memory().numTensors).toBe(before) // no leaks through the native kernels
  for (const t of [ids, targets, w, one]) t.dispose()
  opt.dispose()
  for (const v of model.params.values()) v.dispose()
  return losses
}

describe.skipIf(!built)("training on native vs wasm vs cpu", () => {
  it("gives the same loss curve (within float tolerance) and really learns", async () => {
    await native.register()
    const steps = 6
    const nat = await lossCurve("native", steps)
    const cpu = await lossCurve("cpu", steps)
    const wasm = await lossCurve("wasm", steps)
    console.log(`loss curves\n native ${nat.map((x) => x.toFixed(5)).join(" ")}\n cpu    ${cpu.map((x) => x.toFixed(5)).join(" ")}\n wasm   ${wasm.map((x) => x.toFixed(5)).join(" ")}`)
    for (let i = 0; i < steps; i++) {
      expect(Math.abs(nat[i] - cpu[i]), `step ${i + 1} native vs cpu`).toBeLessThan(1e-4 * Math.max(1, cpu[i]))
      expect(Math.abs(wasm[i] - cpu[i]), `step ${i + 1} wasm vs cpu`).toBeLessThan(1e-4 * Math.max(1, cpu[i]))
    }
    expect(nat[steps - 1]).toBeLessThan(nat[0] - 0.3) // it learns
  }, 400_000)
})

describe.skipIf(!built)("src/train.ts AdamW on native: the fused in-place update", () => {
  it("gives the same parameters and moments as the tensor-level update (weight decay, clipping scale, shared moment buffers)", async () => {
    await native.register()
    await useBackend("native")
    const config = makeConfig({ vocabSize: 40, contextLength: 16, dModel: 32, nLayers: 2, nHeads: 4 })
    const tc = makeTrainConfig({ lr: 5e-3, weightDecay: 0.1, beta1: 0.9, beta2: 0.99 })
    const B = 4, T = 16
    const rows = Array.from({ length: B }, (_, b) => Array.from({ length: T + 1 }, (_, t) => (b * 3 + t * 7) % 40))
    const ids = tf.tensor2d(rows.map((r) => r.slice(0, -1)), [B, T], "int32")
    const targets = tf.tensor1d(rows.flatMap((r) => r.slice(1)), "int32")
    const w = tf.ones([B * T]) as tf.Tensor1D
    const scale = tf.scalar(0.7) // as if clipped
    const run = (fused: boolean) => {
      const model = new GPT(config, { seed: 5 })
      const opt = new AdamW(model.params)
      const names = [...model.params.keys()]
      const vars = names.map((n) => model.params.get(n)!)
      const snapshot = Array.from(vars[0].dataSync()) // a caller's copy of the array before training
      const held = vars[0].dataSync() // the live array handed out: must not change under the caller
      const heldCopy = Array.from(held)
      for (let step = 1; step <= 4; step++) {
        tf.tidy(() => {
          const { grads } = tf.variableGrads(() => maskedCrossEntropy(model.head(model.hidden(ids)), targets, w), vars)
          opt.step(new Map(names.map((n, i) => [n, grads[vars[i].name]])), scale, step, 5e-3, tc, { fused })
        })
      }
      expect(Array.from(held)).toEqual(heldCopy)
      expect(Array.from(vars[0].dataSync())).not.toEqual(snapshot) // it did train
      const out = new Map<string, Float32Array>()
      for (const n of names) {
        out.set(n, vars[names.indexOf(n)].dataSync().slice() as Float32Array)
        out.set(`m.${n}`, opt.m.get(n)!.dataSync().slice() as Float32Array)
        out.set(`v.${n}`, opt.v.get(n)!.dataSync().slice() as Float32Array)
      }
      opt.dispose()
      model.dispose()
      return out
    }
    const before = native.inPlaceVersion()
    const fused = run(true)
    expect(native.inPlaceVersion()).toBeGreaterThan(before) // really took the fused path
    const mid = native.inPlaceVersion()
    const plain = run(false)
    expect(native.inPlaceVersion()).toBe(mid) // and this one really did not
    // relative to the largest value of the same kind (parameters, m, v): k_proj.bias has an
    // exactly-zero true gradient, so its own moments are float noise
    const kind = (k: string) => (k.startsWith("m.") ? "m" : k.startsWith("v.") ? "v" : "p")
    const scales = new Map<string, number>()
    for (const [k, a] of plain) for (const x of a) scales.set(kind(k), Math.max(scales.get(kind(k)) ?? 1e-30, Math.abs(x)))
    let worst = 0, where = ""
    for (const [k, a] of plain) {
      const b = fused.get(k)!
      const scaleK = scales.get(kind(k))!
      for (let i = 0; i < a.length; i++) {
        const d = Math.abs(a[i] - b[i]) / scaleK
        if (d > worst) { worst = d; where = k }
      }
    }
    console.log(`fused vs tensor-level AdamW after 4 steps: max relative difference ${worst.toExponential(2)} (${where})`)
    expect(worst).toBeLessThan(1e-5)
    for (const t of [ids, targets, w, scale]) t.dispose()
  }, 120_000)
})
