// The expert's offline GRPO job really improves a weak expert: groups of its own sampled answers to
// CI-size sort prompts, scored by the verifiable reward, trained as a `grpo` job (20 steps over 24
// groups, so each group is reused for several steps) raise its held-out greedy accuracy. With π_old
// taken as the current policy at every step (ρ ≡ 1, the bug this file guards against) the same job
// collapsed the expert (32.6% → 6.5%); with π_old fixed at the starting version it gains (→ 37.0%).
// In process (the expert's Trainer and Engine, no NATS: the job's numerics are what is tested here;
// rounds.test.ts runs jobs over NATS).
import { afterAll, beforeAll, expect, it } from "vitest"
import { skillTasks } from "../src/index.ts"
import { inProcessSortExpert } from "./helpers.ts"

let sort: Awaited<ReturnType<typeof inProcessSortExpert>>
const spec = skillTasks("sort")
beforeAll(async () => {
  sort = await inProcessSortExpert("grpo-job")
}, 300_000)
afterAll(() => sort?.close())
const accuracy = (adapter?: string) => sort.accuracy(adapter)

it("an offline GRPO job on the expert's own scored samples raises its held-out accuracy", async () => {
  const before = await accuracy()
  const k = 6
  const groups: { prompt: string; completions: string[]; rewards: number[] }[] = []
  for (const [ti, t] of spec.tasks("train", 24, 7919).entries()) {
    const outs = await Promise.all(
      Array.from({ length: k }, (_, j) => sort.ex.engine.generate({ prompt: t.prompt, temperature: j === 0 ? 0 : 0.8, maxTokens: 12, seed: 100_003 + ti * 101 + j })),
    )
    const completions = outs.map((o) => o.text)
    const rewards = completions.map((c) => spec.verify(t, c))
    if (Math.max(...rewards) === Math.min(...rewards)) {
      if (rewards[0] === 1) continue
      completions[k - 1] = t.reference!
      rewards[k - 1] = 1
    }
    groups.push({ prompt: t.prompt, completions, rewards })
  }
  expect(groups.length).toBeGreaterThan(10)
  const res = await sort.ex.trainer.run({ adapter: "sort", baseVersion: "new", algorithm: "grpo", data: groups, hyper: { learningRate: 5e-3, maxSteps: 20, batchSize: 8 } })
  // the ratio left 1 and the clip bounded some tokens (π_old is the starting version, not π detached)
  expect(res.metrics["clip_ratio/region_mean"]).toBeGreaterThan(0)
  expect(Math.min(...res.losses.slice(1))).toBeLessThan(-1e-4)
  const after = await accuracy(`sort@${res.version}`)
  // measured 32.6% → 37.0% (138 held-out questions, greedy: deterministic)
  expect(before).toBeLessThan(0.5)
  expect(after, `held-out accuracy ${before} → ${after}`).toBeGreaterThan(before + 0.02)
}, 300_000)
