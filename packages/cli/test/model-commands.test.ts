import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { runEval } from "../src/commands/eval.ts"
import { runGenerate } from "../src/commands/generate.ts"
import { progressLine, runTrain } from "../src/commands/train.ts"
import { runMoa } from "./helpers.ts"

// reverse 3-letter strings over "abc": 27 strings, every one in the data
const strings: string[] = []
for (const a of "abc") for (const b of "abc") for (const c of "abc") strings.push(a + b + c)
const rev = (s: string) => [...s].reverse().join("")

function fixture() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "moa-cli-model-"))
  const data = path.join(dir, "rev.jsonl")
  fs.writeFileSync(data, [...strings, ...strings].map((s) => JSON.stringify({ prompt: s, completion: rev(s) })).join("\n") + "\n")
  const config = path.join(dir, "config.json")
  fs.writeFileSync(config, JSON.stringify({
    model: { contextLength: 12, dModel: 48, nLayers: 2, nHeads: 4 },
    train: { steps: 100, batchSize: 27, lr: 1e-2, warmupSteps: 5, weightDecay: 0 },
    tokenizer: { type: "char", byteFallback: false },
    valFraction: 0,
  }))
  return { dir, data, config }
}

describe("moa train / generate / eval", () => {
  it("as functions: trains, saves, answers and scores", async () => {
    const { dir, data, config } = fixture()
    const out = path.join(dir, "model")
    const steps: number[] = []
    const r = await runTrain({ data, config, out, backend: "wasm", onProgress: (p) => steps.push(p.step) })
    expect(steps.length).toBe(100)
    expect(r.result.finalLoss).toBeLessThan(r.result.history[0].loss / 4)
    expect(fs.readdirSync(out).sort()).toEqual(["config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json", "train_config.json", "trainer_state.json"])
    const g = await runGenerate({ model: out, prompts: ["abc", "cab"], backend: "wasm" })
    expect(g.outputs.map((o) => o.text)).toEqual(["cba", "bac"])
    const pieces: string[] = []
    const s = await runGenerate({ model: out, prompts: ["bca"], backend: "wasm", onText: (t) => pieces.push(t) })
    expect(pieces.join("")).toBe(s.outputs[0].text)
    const e = await runEval({ model: out, data, backend: "wasm" })
    expect(e.examples).toBe(54)
    expect(e.exactMatch).toBeGreaterThanOrEqual(0.9)
    expect(e.perplexity).toBeCloseTo(Math.exp(e.loss), 6)
    // resume continues the step count
    const more = await runTrain({ data, config, out, backend: "wasm", steps: 110, resume: true })
    expect(more.result.history.length).toBe(110)
  }, 240_000)

  it("bad input is a clear error naming the file and line", async () => {
    const { dir, config } = fixture()
    const bad = path.join(dir, "bad.jsonl")
    fs.writeFileSync(bad, '{"prompt":"a","completion":"b"}\n{"question":"x"}\n')
    await expect(runTrain({ data: bad, config, out: path.join(dir, "m"), backend: "wasm" })).rejects.toThrow(/bad.jsonl:2: each line needs/)
    await expect(runGenerate({ model: path.join(dir, "nope"), prompts: ["a"], backend: "wasm" })).rejects.toThrow(/checkpoint folder does not exist/)
    expect(progressLine(5, 10, ["x"], 10)).toBe("[#####-----] x")
  })

  it("as a real subprocess: moa train then moa generate", async () => {
    const { dir, data, config } = fixture()
    const out = path.join(dir, "model")
    const env = { MOA_BACKEND: "wasm" }
    const t = await runMoa(["train", "--data", data, "--config", config, "--out", out, "--steps", "20"], env)
    expect(t.stderr).toMatch(/step 20\/20 loss/)
    expect(t.stdout).toMatch(/saved .*: 20 steps/)
    expect(t.code).toBe(0)
    const g = await runMoa(["generate", "--model", out, "--json", "abc", "acb"], env)
    expect(g.code).toBe(0)
    const lines = g.stdout.trim().split("\n").map((l) => JSON.parse(l))
    expect(lines.map((l) => l.prompt)).toEqual(["abc", "acb"])
    const bad = await runMoa(["eval", "--model", path.join(dir, "missing"), "--data", data], env)
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toMatch(/moa eval: .*missing.*does not exist/)
  }, 300_000)
})
