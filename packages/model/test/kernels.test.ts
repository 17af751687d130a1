import * as tf from "@tensorflow/tfjs"
import { beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../src/backend.js"
import { GPT, makeConfig } from "../src/gpt.js"
import { installWasmKernelFixes } from "../src/wasm-kernels.js"

// Every replaced wasm kernel against the cpu backend, on the shapes the model uses.
const TOL = 1e-5

async function onBoth<T>(f: () => T): Promise<[T, T]> {
  await tf.setBackend("wasm")
  const a = f()
  await tf.setBackend("cpu")
  const b = f()
  await tf.setBackend("wasm")
  return [a, b]
}

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>) {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])))
  return m
}

const rnd = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, "float32", seed)

beforeAll(async () => {
  const info = await initBackend("wasm")
  expect(info.name).toBe("wasm")
  expect(info.kernelFixes).toBe(true)
})

describe("wasm kernel fixes match cpu", () => {
  it("are tied to the pinned tfjs version", () => {
    expect(installWasmKernelFixes("4.23.0")).toEqual({ installed: false, reason: expect.stringMatching(/tfjs 4.23.0 is not the pinned 4.22.0/) })
    expect(installWasmKernelFixes().installed).toBe(true)
  })

  // B=2, T=8, C=16, nh=4 (hs=4), V=11: the shapes of a small GPT, forward and backward.
  const cases: [string, () => tf.Tensor][] = [
    ["linear x@W (B*T,C)x(C,4C)", () => tf.matMul(rnd([16, 16], 1), rnd([16, 64], 2))],
    ["weight grad xᵀ@dy", () => tf.matMul(rnd([16, 16], 1), rnd([16, 64], 2), true, false)],
    ["input grad dy@Wᵀ", () => tf.matMul(rnd([16, 64], 1), rnd([16, 64], 2), false, true)],
    ["tied logits h@wteᵀ", () => tf.matMul(rnd([16, 16], 3), rnd([11, 16], 4), false, true)],
    ["q@kᵀ (B,nh,T,hs)", () => tf.matMul(rnd([2, 4, 8, 4], 5), rnd([2, 4, 8, 4], 6), false, true)],
    ["att@v", () => tf.matMul(rnd([2, 4, 8, 8], 7), rnd([2, 4, 8, 4], 8))],
    ["attᵀ@dy", () => tf.matMul(rnd([2, 4, 8, 8], 7), rnd([2, 4, 8, 4], 8), true, false)],
    ["both transposed", () => tf.matMul(rnd([2, 4, 4, 8], 7), rnd([2, 4, 8, 4], 8), true, true)],
    ["kv-cache q@kᵀ (B,nh,1,hs)x(B,nh,9,hs)", () => tf.matMul(rnd([2, 4, 1, 4], 9), rnd([2, 4, 9, 4], 10), false, true)],
    ["broadcast batch x (B*nh*T,hs)@R", () => tf.matMul(rnd([2, 4, 8, 4], 9), rnd([4, 4], 10))],
    ["transpose 2-D", () => tf.transpose(rnd([37, 70], 11))],
    ["transpose heads [0,2,1,3]", () => tf.transpose(rnd([2, 8, 4, 4], 12), [0, 2, 1, 3])],
    ["transpose batched 2-D", () => tf.transpose(rnd([2, 4, 8, 5], 12), [0, 1, 3, 2])],
    ["transpose general", () => tf.transpose(rnd([3, 4, 5, 6], 13), [2, 0, 3, 1])],
    ["transpose with unit axes", () => tf.transpose(rnd([1, 8, 1, 4], 13), [0, 2, 1, 3])],
    ["sum over leading axis (bias grad)", () => tf.sum(rnd([16, 64], 14), 0)],
    ["sum over two leading axes", () => tf.sum(rnd([2, 8, 16], 14), [0, 1])],
    ["sum keepDims", () => tf.sum(rnd([2, 8, 16], 14), [0], true)],
    ["sum last axis (fallback)", () => tf.sum(rnd([2, 8, 16], 14), -1)],
    ["slice", () => tf.slice(rnd([2, 9, 7], 15), [1, 2, 3], [1, 5, 4])],
    ["slice rows", () => tf.slice(rnd([64, 16], 15), [8, 0], [16, 16])],
    ["slice int32", () => tf.slice(tf.range(0, 60, 1, "int32").reshape([6, 10]), [0, 1], [6, 9])],
    ["unsortedSegmentSum", () => tf.unsortedSegmentSum(rnd([10, 16], 16), tf.tensor1d([0, 3, 3, 1, 0, 9, 2, 3, 1, 1], "int32"), 11)],
    ["gather gradient", () => tf.grad((t: tf.Tensor) => tf.gather(t, tf.tensor1d([1, 3, 1, 0, 10], "int32")).square().sum())(rnd([11, 16], 17))],
  ]
  for (const [name, f] of cases)
    it(name, async () => {
      const [a, b] = await onBoth(() => tf.tidy(() => {
        const t = f()
        return { shape: t.shape, data: Array.from(t.dataSync()) }
      }))
      expect(a.shape).toEqual(b.shape)
      expect(maxRelDiff(a.data, b.data)).toBeLessThan(TOL)
    })

  for (const cfg of [
    { norm: "layernorm", position: "learned", tiedEmbeddings: true, bias: true },
    { norm: "rmsnorm", position: "rope", tiedEmbeddings: false, bias: false },
  ] as const)
    it(`whole model: logits, loss and every gradient (${cfg.norm}, ${cfg.position})`, async () => {
      const config = makeConfig({ vocabSize: 11, contextLength: 8, dModel: 16, nLayers: 2, nHeads: 4, ...cfg })
      const model = new GPT(config, { seed: 3 })
      const ids = tf.tensor2d([[1, 4, 5, 6, 7, 8, 9, 2], [1, 10, 4, 4, 3, 2, 0, 0]], [2, 8], "int32")
      const run = () => tf.tidy(() => {
        const vars = [...model.params.values()]
        const { value, grads } = tf.variableGrads(() => {
          const logits = model.forward(ids, { training: true })
          return tf.mean(tf.square(logits)) as tf.Scalar
        }, vars)
        const out: Record<string, number[]> = { loss: Array.from(value.dataSync()) }
        for (const [name, v] of model.params) out[name] = Array.from(grads[v.name].dataSync())
        return out
      })
      const [a, b] = await onBoth(run)
      for (const k of Object.keys(b)) expect(maxRelDiff(a[k], b[k]), k).toBeLessThan(TOL)
      model.dispose()
      ids.dispose()
    })
})
