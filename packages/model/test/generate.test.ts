import * as tf from "@tensorflow/tfjs"
import { beforeAll, describe, expect, it } from "vitest"
import { initBackend } from "../src/backend.js"
import { encodeExample } from "../src/data.js"
import { generate, generateStream, sampleToken } from "../src/generate.js"
import { GPT, makeConfig } from "../src/gpt.js"
import { CharTokenizer } from "../src/tokenizer.js"
import { rng, train } from "../src/train.js"

const tok = CharTokenizer.train("abcdefgh =", { byteFallback: false })
let model: GPT

beforeAll(async () => {
  await initBackend("wasm")
  // a briefly trained model so that greedy outputs are not degenerate
  model = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 32, dModel: 32, nLayers: 2, nHeads: 4, position: "rope" }), { seed: 4 })
  const words = ["abc", "bad", "cafe", "dead", "face", "bead", "head", "hag"]
  await train({
    model, train: words.map((w) => encodeExample(tok, { prompt: w, completion: `${w} = ${[...w].reverse().join("")}` })),
    config: { steps: 80, batchSize: 8, lr: 1e-2, warmupSteps: 5, weightDecay: 0 },
  })
})

describe("generation", () => {
  const prompts = ["abc", "dead", "h", "cafe bead"]

  it("cached and uncached greedy outputs are identical", () => {
    const cached = generate(model, tok, prompts, { maxTokens: 12, stopAtEos: false })
    const uncached = generate(model, tok, prompts, { maxTokens: 12, stopAtEos: false, cache: false })
    expect(cached.map((g) => g.tokens)).toEqual(uncached.map((g) => g.tokens))
    expect(cached.every((g) => g.tokens.length === 12)).toBe(true)
  })

  it("batched prompts of different lengths give the same answers as one by one", () => {
    const batched = generate(model, tok, prompts, { maxTokens: 10 })
    const single = prompts.map((p) => generate(model, tok, [p], { maxTokens: 10 })[0])
    expect(batched.map((g) => g.tokens)).toEqual(single.map((g) => g.tokens))
  })

  it("stops at eos, at a stop sequence and at maxTokens", () => {
    const [g] = generate(model, tok, ["abc"], { maxTokens: 20 })
    expect(g.finishReason).toBe("eos")
    expect(g.text).toBe("abc = cba")
    const [s] = generate(model, tok, ["abc"], { maxTokens: 20, stop: [" ="] })
    expect(s).toMatchObject({ text: "abc", finishReason: "stop" })
    const [l] = generate(model, tok, ["abc"], { maxTokens: 2 })
    expect(l.finishReason).toBe("length")
    expect(l.tokens.length).toBe(2)
  })

  it("streams tokens as an async iterator whose chunks add up to the text", async () => {
    const chunks: string[] = []
    const it = generateStream(model, tok, "dead", { maxTokens: 20, stop: ["= "] })
    let r = await it.next()
    while (!r.done) {
      chunks.push(r.value.text)
      r = await it.next()
    }
    expect(chunks.length).toBeGreaterThan(1)
    expect(chunks.join("")).toBe(r.value.text)
    expect(r.value.text).toBe("dead ")
    expect(r.value.finishReason).toBe("stop")
  })

  it("sampling: seeded, top-k 1 is greedy, top-p keeps the likely tokens", () => {
    const a = generate(model, tok, ["ab"], { maxTokens: 8, temperature: 1.5, seed: 3, stopAtEos: false })
    const b = generate(model, tok, ["ab"], { maxTokens: 8, temperature: 1.5, seed: 3, stopAtEos: false })
    expect(a[0].tokens).toEqual(b[0].tokens)
    const greedy = generate(model, tok, ["ab"], { maxTokens: 8, stopAtEos: false })
    const k1 = generate(model, tok, ["ab"], { maxTokens: 8, temperature: 2, topK: 1, seed: 9, stopAtEos: false })
    expect(k1[0].tokens).toEqual(greedy[0].tokens)
    const logits = [0, 5, 4.9, -3, -3]
    const r = rng(1)
    const picks = new Set(Array.from({ length: 200 }, () => sampleToken(logits, { temperature: 1, topP: 0.9 }, r)))
    expect([...picks].sort()).toEqual([1, 2])
    const wide = new Set(Array.from({ length: 400 }, () => sampleToken([0, 0, 0, 0], { temperature: 1 }, r)))
    expect(wide.size).toBe(4)
  })

  it("rejects prompts longer than the context", () => {
    expect(() => generate(model, tok, ["a".repeat(40)])).toThrow(/contextLength 32/)
    expect(tf.memory().numTensors).toBeGreaterThan(0)
  })
})
