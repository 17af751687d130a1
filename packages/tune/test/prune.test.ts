import * as tf from "@tensorflow/tfjs"
import { GPT, makeConfig } from "@moa/model"
import { describe, expect, it } from "vitest"
import { magnitudePrune, structuredPrune } from "../src/prune.ts"

const tiny = () => new GPT(makeConfig({ vocabSize: 12, contextLength: 8, dModel: 16, nLayers: 2, nHeads: 4 }), { seed: 1 })
const ids = tf.tensor2d([[1, 2, 3, 4, 5]], [1, 5], "int32")

describe("pruning", () => {
  it("magnitude pruning zeroes exactly the target fraction of each linear weight, smallest first", () => {
    const m = tiny()
    const w0 = Float32Array.from(m.params.get("h.0.mlp.fc_in.weight")!.dataSync())
    const r = magnitudePrune(m, 0.5)
    const w = m.params.get("h.0.mlp.fc_in.weight")!.dataSync()
    expect(w.filter((x) => x === 0).length).toBe(Math.floor(w.length / 2))
    const kept = Math.min(...Array.from(w0).filter((_, i) => w[i] !== 0).map(Math.abs))
    const dropped = Math.max(...Array.from(w0).filter((_, i) => w[i] === 0).map(Math.abs))
    expect(kept).toBeGreaterThanOrEqual(dropped)
    const linear = m.linearNames().reduce((n, l) => n + m.params.get(`${l}.weight`)!.size, 0)
    expect(r.zeros).toBeGreaterThanOrEqual(Math.floor(linear / 2))
    expect(() => magnitudePrune(m, 1)).toThrow(/sparsity/)
  })

  it("a structurally pruned head or neuron contributes nothing", () => {
    const m = tiny()
    const r = structuredPrune(m, { headFraction: 0.5, neuronFraction: 0.25 })
    expect(r.compactParams).toBeLessThan(r.params)
    expect(r.detail).toMatch(/layer 0 heads \d,\d; layer 0 16\/64 neurons/)
    // the zeroed o_proj rows are exactly the zeroed v_proj columns: 2 heads × 4 dims
    const o = m.params.get("h.0.attn.o_proj.weight")!.arraySync() as number[][]
    const zeroRows = o.map((row, i) => (row.every((x) => x === 0) ? i : -1)).filter((i) => i >= 0)
    expect(zeroRows.length).toBe(8)
    const v = m.params.get("h.0.attn.v_proj.weight")!.arraySync() as number[][]
    for (const j of zeroRows) expect(v.every((row) => row[j] === 0)).toBe(true)
    expect(m.forward(ids).shape).toEqual([1, 5, 12])
  })
})
