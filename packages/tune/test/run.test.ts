import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { CharTokenizer, GPT, loadCheckpoint, makeConfig, saveCheckpoint } from "@moa/model"
import { afterAll, describe, expect, it } from "vitest"
import { compareAdapters, runTune } from "../src/run.ts"
import { hftTrainable } from "../src/peft/hft.ts"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "moa-tune-run-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
const tok = new CharTokenizer([..."abc="], false)
const base = path.join(dir, "base")
saveCheckpoint(base, new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 12, dModel: 16, nLayers: 1, nHeads: 2 }), { seed: 1 }), tok)
const data = path.join(dir, "d.jsonl")
fs.writeFileSync(data, Array.from({ length: 40 }, (_, i) => JSON.stringify({ prompt: ["ab", "ba", "cab", "abc"][i % 4], completion: ["ba", "ab", "bac", "cba"][i % 4], task: i % 2 ? "x" : "y" })).join("\n") + "\n")

describe("runTune (the pipeline behind moa tune)", () => {
  it("trains an adapter and writes it with its report, log and loss curve; compare reads it back", async () => {
    const out = path.join(dir, "lora")
    const r = await runTune({ method: "lora", base, data, out, steps: 4, batchSize: 8, backend: "cpu", r: 2 })
    expect(fs.readdirSync(out).sort()).toEqual(["adapter_config.json", "adapter_model.safetensors", "loss.svg", "report.md", "train_log.jsonl"])
    expect(r.trainableParams).toBe(4 * 2 * (16 + 16) + 2 * (2 * (16 + 64)))
    expect(fs.readFileSync(path.join(out, "report.md"), "utf8")).toMatch(/duplicates dropped \| 36/)
    const cmp = await compareAdapters({ base, adapters: [out], data, backend: "cpu" })
    expect(cmp.results.map((x) => x.name)).toEqual(["base", "lora"])
    expect(cmp.markdown).toMatch(/\| lora \|/)
  })

  it("stops before training on bad data or a bad target, naming where", async () => {
    const bad = path.join(dir, "bad.jsonl")
    fs.writeFileSync(bad, '{"prompt":"ab","completion":"ba"}\n{"prompt":"ab"}\n')
    await expect(runTune({ method: "lora", base, data: bad, out: path.join(dir, "x"), steps: 1, backend: "cpu" })).rejects.toThrow(/bad\.jsonl:2 field "completion": missing/)
    const long = path.join(dir, "long.jsonl")
    fs.writeFileSync(long, '{"prompt":"abcabcabcabc","completion":"a"}\n')
    await expect(runTune({ method: "full", base, data: long, out: path.join(dir, "x"), steps: 1, backend: "cpu" })).rejects.toThrow(/long\.jsonl:1 field "prompt".*context of 12/)
    await expect(runTune({ method: "lora", base, data, out: path.join(dir, "x"), steps: 1, backend: "cpu", targets: ["gate_proj"] })).rejects.toThrow(/"gate_proj" matches no linear layer/)
    expect(fs.existsSync(path.join(dir, "x"))).toBe(false)
  })

  it("Half Fine-Tuning trains one half of every category for the whole stage; the next stage another half", async () => {
    const before = loadCheckpoint(base).model
    const names = [...before.params.keys()]
    const changedIn = async (stage: number) => {
      const out = path.join(dir, `hft-${stage}`)
      await runTune({ method: "hft", base, data, out, steps: 6, batchSize: 8, lr: 1e-2, backend: "cpu", hftStage: stage, seed: 3 })
      const after = loadCheckpoint(out).model
      const changed = names.filter((n) => !Array.from(after.params.get(n)!.dataSync()).every((v, i) => v === before.params.get(n)!.dataSync()[i]))
      after.dispose()
      return changed
    }
    const s0 = await changedIn(0)
    const s1 = await changedIn(1)
    expect(s0).toEqual(hftTrainable(names, 0, 3))
    expect(s1).toEqual(hftTrainable(names, 1, 3))
    expect(s0).not.toEqual(s1)
    before.dispose()
    await expect(runTune({ method: "hft", base, data, out: path.join(dir, "x"), steps: 1, backend: "cpu", hftStage: -1 })).rejects.toThrow(/hft stage must be a whole number ≥ 0, got -1/)
    await expect(runTune({ method: "hft", base, data, out: path.join(dir, "x"), steps: 1, backend: "cpu", hftRound: 0 })).rejects.toThrow(/hft round must be a whole number of steps ≥ 1/)
  })
})
