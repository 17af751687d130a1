// The coordinator's pure parts: bounded concurrency towards an expert and the default job hyper-parameters.
import { describe, expect, it } from "vitest"
import { buildRollouts, defaultHyper, mapLimited, taskSpecOf, trainingData, type ScoredGroup } from "../src/index.ts"

describe("mapLimited", () => {
  it("keeps at most `limit` calls in flight and returns results in input order", async () => {
    let inFlight = 0
    let most = 0
    const items = Array.from({ length: 700 }, (_, i) => i)
    const out = await mapLimited(items, 48, async (x) => {
      inFlight++
      most = Math.max(most, inFlight)
      // finish out of order: later items sometimes return first
      await new Promise((r) => setTimeout(r, (x * 7) % 5))
      inFlight--
      return x * 2
    })
    expect(most).toBe(48)
    expect(out).toEqual(items.map((x) => x * 2))
  })

  it("passes a failure through and handles an empty list", async () => {
    expect(await mapLimited([], 8, async () => 1)).toEqual([])
    await expect(mapLimited([1, 2, 3], 2, async (x) => (x === 2 ? Promise.reject(new Error("boom 2")) : x))).rejects.toThrow("boom 2")
  })
})

describe("defaultHyper", () => {
  it("anchors DPO with the chosen answers' NLL (rpoAlpha 1) and leaves the others without it", () => {
    expect(defaultHyper("dpo", 100).rpoAlpha).toBe(1)
    for (const a of ["ipo", "simpo", "orpo", "kto", "grpo", "ppo"] as const) expect(defaultHyper(a, 100).rpoAlpha).toBeUndefined()
  })
})

describe("taskSpecOf", () => {
  it("names skills in the model's format (ci, full) and in plain questions (:plain, for experts that translate)", () => {
    expect(taskSpecOf("sort").name).toBe("sort:ci")
    expect(taskSpecOf("sort:full").name).toBe("sort")
    const plain = taskSpecOf("count:plain")
    expect(plain.name).toBe("count:plain")
    const [t] = plain.tasks("test", 1, 1000)
    expect(t!.prompt).toBe(t!.question) // the question itself, not the model's internal prompt
    expect(plain.verify(t!, t!.reference!)).toBe(1)
  })

  it("refuses unknown tasks and sizes with the accepted forms", () => {
    expect(() => taskSpecOf("sorting")).toThrow(/unknown task "sorting".*:plain/)
    expect(() => taskSpecOf("sort:huge")).toThrow(/unknown task "sort:huge"/)
    expect(() => taskSpecOf("sort:plain:full")).toThrow(/unknown task/)
  })
})

describe("PPO rollouts", () => {
  const task = (q: string, reference?: string) => ({ question: q, prompt: q, ...(reference ? { reference } : {}) })
  const groups: ScoredGroup[] = [
    { task: task("sort cba", "abc"), completions: ["abc", "acb", "abc"], rewards: [1, 0, 1] },
    { task: task("sort ba", "ab"), completions: ["ba", "bb"], rewards: [0, 0] }, // all wrong: the reference joins
    { task: task("sort zy", "yz"), completions: ["yz", "zz"], rewards: [1, null] }, // unscored: dropped, not guessed
    { task: task("sort qp"), completions: ["pp", "qq"], rewards: [0, 0] }, // all wrong, no reference: kept as is
  ]
  it("keeps every scored completion with its reward; the reference replaces the last sample of an all-wrong prompt", () => {
    expect(buildRollouts(groups)).toEqual([
      { prompt: "sort cba", completion: "abc", reward: 1 },
      { prompt: "sort cba", completion: "acb", reward: 0 },
      { prompt: "sort cba", completion: "abc", reward: 1 },
      { prompt: "sort ba", completion: "ba", reward: 0 },
      { prompt: "sort ba", completion: "ab", reward: 1 },
      { prompt: "sort zy", completion: "yz", reward: 1 },
      { prompt: "sort qp", completion: "pp", reward: 0 },
      { prompt: "sort qp", completion: "qq", reward: 0 },
    ])
  })
  it("is what a ppo round sends (a real PPO job in the expert, not GRPO), with π at the sampling temperature", () => {
    expect(trainingData("ppo", groups).algorithm).toBe("ppo")
    expect(trainingData("grpo", groups).algorithm).toBe("grpo")
    expect(defaultHyper("ppo", 8000)).toMatchObject({ numPpoEpochs: 1, lam: 1, temperature: 0.8, batchSize: 64 })
  })
})
