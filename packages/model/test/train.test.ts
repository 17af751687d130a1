import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../src/backend.js"
import { loadCheckpoint } from "../src/checkpoint.js"
import { encodeExample } from "../src/data.js"
import { generate } from "../src/generate.js"
import { GPT, makeConfig } from "../src/gpt.js"
import { CharTokenizer } from "../src/tokenizer.js"
import { batchIndices, evaluateLoss, groupedBatchIndices, learningRate, makeTrainConfig, rng, train } from "../src/train.js"

beforeAll(async () => {
  await initBackend("wasm")
})

// The tiny task: reverse 4-letter strings over a 4-letter alphabet; 40 of the 256 strings held out.
const alphabet = "abcd"
const all: string[] = []
for (const a of alphabet) for (const b of alphabet) for (const c of alphabet) for (const d of alphabet) all.push(a + b + c + d)
const r = rng(5)
for (let i = all.length - 1; i > 0; i--) {
  const j = Math.floor(r() * (i + 1))
  ;[all[i], all[j]] = [all[j], all[i]]
}
const heldOut = all.slice(0, 40)
const trainSet = all.slice(40)
const reverse = (s: string) => [...s].reverse().join("")
const tok = CharTokenizer.train(alphabet, { byteFallback: false })
const examples = trainSet.map((s) => encodeExample(tok, { prompt: s, completion: reverse(s) }))
const tinyConfig = () => makeConfig({ vocabSize: tok.vocabSize, contextLength: 12, dModel: 64, nLayers: 2, nHeads: 4 })
const accuracy = (m: GPT, set: string[]) =>
  generate(m, tok, set, { maxTokens: 6 }).filter((g, i) => g.text === reverse(set[i])).length / set.length

describe("training", () => {
  it("learns a tiny task: held-out exact match goes from chance to >= 90%", async () => {
    const model = new GPT(tinyConfig(), { seed: 1 })
    expect(accuracy(model, heldOut)).toBeLessThan(0.1)
    const seen: number[] = []
    const res = await train({
      model, train: examples, val: heldOut.map((s) => encodeExample(tok, { prompt: s, completion: reverse(s) })),
      config: { steps: 80, batchSize: 32, lr: 3e-3, warmupSteps: 10, weightDecay: 0.01, evalEvery: 40 },
      onProgress: (p) => {
        seen.push(p.step)
        expect(p.tokensPerSec).toBeGreaterThan(0)
        expect(p.etaSec).toBeGreaterThanOrEqual(0)
      },
    })
    expect(seen).toEqual(Array.from({ length: 80 }, (_, i) => i + 1))
    expect(res.history[0].loss).toBeGreaterThan(1)
    expect(res.finalLoss).toBeLessThan(0.1)
    expect(res.history.filter((h) => h.valLoss !== undefined).length).toBe(2)
    expect(accuracy(model, heldOut)).toBeGreaterThanOrEqual(0.9)
    const val = evaluateLoss(model, examples.slice(0, 32))
    expect(val.perplexity).toBeCloseTo(Math.exp(val.loss), 6)
    model.dispose()
  }, 240_000)

  it("resuming from a checkpoint gives the same loss curve as an uninterrupted run (dropout on)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "moa-train-"))
    const config = makeConfig({ vocabSize: tok.vocabSize, contextLength: 12, dModel: 32, nLayers: 1, nHeads: 2, dropout: 0.1 })
    const tc = { steps: 6, batchSize: 8, gradAccum: 2, lr: 3e-3, warmupSteps: 2, checkpointEvery: 3, seed: 7 }
    const full = new GPT(config, { seed: 2 })
    const a = await train({ model: full, train: examples, config: tc })
    full.dispose()

    const first = new GPT(config, { seed: 2 })
    await expect(
      train({
        model: first, train: examples, config: tc, checkpointDir: path.join(dir, "ck"), tokenizer: tok,
        onProgress: (p) => { if (p.step === 4) throw new Error("simulated crash") },
      }),
    ).rejects.toThrow("simulated crash")
    first.dispose()
    const meta = loadCheckpoint(path.join(dir, "ck"))
    expect(meta.metadata.step).toBe("3")
    const b = await train({ model: meta.model, train: examples, config: tc, resumeFrom: path.join(dir, "ck") })
    expect(b.history.map((h) => h.step)).toEqual([1, 2, 3, 4, 5, 6])
    for (let i = 0; i < 6; i++) expect(b.history[i].loss).toBeCloseTo(a.history[i].loss, 5)
    meta.model.dispose()
  }, 60_000)

  it("stops early when the validation loss stops improving", async () => {
    const model = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 12, dModel: 16, nLayers: 1, nHeads: 2 }))
    // validation on a task the training data contradicts: it cannot keep improving
    const val = trainSet.slice(0, 16).map((s) => encodeExample(tok, { prompt: s, completion: s }))
    const res = await train({ model, train: examples, val, config: { steps: 200, batchSize: 16, lr: 1e-2, warmupSteps: 1, evalEvery: 5, patience: 2 } })
    expect(res.stoppedEarly).toBe(true)
    expect(res.steps).toBeLessThan(200)
    model.dispose()
  }, 60_000)

  it("answer-only loss ignores prompt tokens", async () => {
    const model = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 12, dModel: 16, nLayers: 1, nHeads: 2 }))
    const e = encodeExample(tok, { prompt: "abcd", completion: "dcba" })
    expect(e.mask).toEqual([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    const masked = evaluateLoss(model, [e]).tokens
    const all = evaluateLoss(model, [{ ids: e.ids }]).tokens
    expect(masked).toBe(5)
    expect(all).toBe(10)
    model.dispose()
  })

  it("schedule, config validation and data order", () => {
    const c = makeTrainConfig({ steps: 100, lr: 1e-3, warmupSteps: 10 })
    expect(learningRate(c, 0)).toBeCloseTo(1e-4)
    expect(learningRate(c, 9)).toBeCloseTo(1e-3)
    expect(learningRate(c, 99)).toBeCloseTo(1e-4, 5)
    expect(learningRate(makeTrainConfig({ ...c, schedule: "constant" }), 80)).toBe(1e-3)
    expect(() => makeTrainConfig({ batchSize: 0 })).toThrow(/batchSize/)
    expect(() => makeTrainConfig({ lr: -1 })).toThrow(/lr/)
    expect(() => makeTrainConfig({ stepz: 3 } as any)).toThrow(/no field "stepz"/)
    // every example once per epoch, same order for the same seed
    const epoch = [0, 1, 2, 3].flatMap((m) => batchIndices(10, 5, 3, m))
    expect(epoch.slice(0, 10).sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    expect(batchIndices(10, 5, 3, 2)).toEqual(batchIndices(10, 5, 3, 2))
  })

  it("group by length: batches of like length, every row once an epoch, less padding", () => {
    // 64 rows of lengths 1..64 in a scrambled order; batches of 4, groups of 8 batches (one epoch = 2 groups)
    const lengths = Array.from({ length: 64 }, (_, i) => ((i * 37) % 64) + 1)
    const grouped = Array.from({ length: 16 }, (_, m) => groupedBatchIndices(lengths, 4, 5, m, 8))
    expect(grouped.flat().sort((x, y) => x - y)).toEqual(Array.from({ length: 64 }, (_, i) => i))
    // a group holds the same rows as the plain draw of its micro-batches
    const plainGroup0 = [0, 1, 2, 3, 4, 5, 6, 7].flatMap((m) => batchIndices(64, 4, 5, m)).sort((x, y) => x - y)
    expect(grouped.slice(0, 8).flat().sort((x, y) => x - y)).toEqual(plainGroup0)
    const padding = (batches: number[][]) => batches.reduce((a, b) => a + b.length * Math.max(...b.map((i) => lengths[i]!)) - b.reduce((s, i) => s + lengths[i]!, 0), 0)
    const plain = Array.from({ length: 16 }, (_, m) => batchIndices(64, 4, 5, m))
    expect(padding(grouped)).toBeLessThan(padding(plain) / 3)
    // the batches of a group are not taken shortest first
    const maxes = grouped.slice(0, 8).map((b) => Math.max(...b.map((i) => lengths[i]!)))
    expect(maxes).not.toEqual([...maxes].sort((x, y) => x - y))
    expect(groupedBatchIndices(lengths, 4, 5, 3, 8)).toEqual(grouped[3])
    expect(() => makeTrainConfig({ groupByLength: -1 })).toThrow(/groupByLength/)
  })
})
