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
