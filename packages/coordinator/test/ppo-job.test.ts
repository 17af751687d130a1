// The expert's PPO job learns its objective: rollouts of the expert's own sampled answers to CI-size
// sort prompts (the reference answer joins a prompt whose samples are all wrong, as the
// coordinator does), scored by the verifiable reward, trained as a `ppo` job — a fresh value head
// on the trunk, GAE advantages from it, the clipped policy and value losses, π_old fixed at the
// starting version. After the job the right rollouts gained log-probability against the wrong
// ones and held-out accuracy did not collapse (one job of this d32 model moves held-out accuracy
// by ±7 points from one rollout set to the next, GRPO's as much: docs/coordinator.md has PPO
// rounds on the skills cluster). With freezingActorSteps ≥ steps only the critic learns and the
// policy is the starting one. In process (the expert's Trainer and Engine, no NATS: the job's
// numerics are what is tested here; rounds.test.ts runs jobs over NATS).
import { afterAll, beforeAll, expect, it } from "vitest"
import { skillTasks } from "../src/index.ts"
import { inProcessSortExpert } from "./helpers.ts"

let sort: Awaited<ReturnType<typeof inProcessSortExpert>>
const spec = skillTasks("sort")
beforeAll(async () => {
  sort = await inProcessSortExpert("ppo-job")
}, 300_000)
afterAll(() => sort?.close())
const accuracy = (adapter?: string) => sort.accuracy(adapter)

type Rollout = { prompt: string; completion: string; reward: number }
/** Mean per-token log-prob of the right rollouts minus that of the wrong ones, under `adapter`. */
const margin = async (rollouts: ReadonlyArray<Rollout>, adapter?: string) => {
  const per = { right: [] as number[], wrong: [] as number[] }
  for (const r of rollouts) {
    const s = await sort.ex.engine.score({ prompt: r.prompt, completions: [r.completion], ...(adapter ? { adapter } : {}) })
    ;(r.reward === 1 ? per.right : per.wrong).push(s.logprobs[0]! / s.tokens[0]!)
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
  return mean(per.right) - mean(per.wrong)
}

it("a PPO job raises its right rollouts against its wrong ones, keeps the expert's accuracy, and refuses bad rollouts", async () => {
  const k = 8
  const rollouts: Rollout[] = []
  for (const [ti, t] of spec.tasks("train", 48, 7919).entries()) {
    // one at a time: the same rollouts on every run (concurrent requests share decode batches)
    const texts: string[] = []
    for (let j = 0; j < k; j++) texts.push((await sort.ex.engine.generate({ prompt: t.prompt, temperature: 0.7, maxTokens: 12, seed: 77_001 + ti * 101 + j })).text)
    const rewards = texts.map((c) => spec.verify(t, c))
    if (Math.max(...rewards) === 0) {
      texts[k - 1] = t.reference!
      rewards[k - 1] = 1
    }
    texts.forEach((completion, j) => rollouts.push({ prompt: t.prompt, completion, reward: rewards[j]! }))
  }
  const right = rollouts.filter((r) => r.reward === 1).length
  expect(right).toBeGreaterThan(48)
  expect(right).toBeLessThan(rollouts.length / 2)

  const [before, m0] = [await accuracy(), await margin(rollouts)]
  const hyper = { learningRate: 2e-3, maxSteps: 32, batchSize: 64, numPpoEpochs: 4, temperature: 0.7 }
  const res = await sort.ex.trainer.run({ adapter: "sort", baseVersion: "new", algorithm: "ppo", data: rollouts, hyper })
  const [after, m1] = [await accuracy(`sort@${res.version}`), await margin(rollouts, `sort@${res.version}`)]
  console.log(`PPO job: held-out ${before.toFixed(3)} → ${after.toFixed(3)}; right − wrong log-prob per token ${m0.toFixed(3)} → ${m1.toFixed(3)}; ${JSON.stringify(res.metrics)}`)
  expect(res.algorithm).toBe("ppo")
  expect(res.steps).toBe(32)
  expect(res.metrics["policy/clipfrac_avg"]).toBeGreaterThan(0) // the ratio left 1 and the clip bounded some tokens
  expect(res.metrics["loss/value_avg"]).toBeGreaterThan(0)
  expect(after, `held-out accuracy ${before} → ${after}`).toBeGreaterThan(before - 0.05)
  // the control: the same job with every reward flipped pushes the margin the other way
  const flipped = await sort.ex.trainer.run({ adapter: "sort", baseVersion: "new", algorithm: "ppo", data: rollouts.map((r) => ({ ...r, reward: 1 - r.reward })), hyper })
  const mFlipped = await margin(rollouts, `sort@${flipped.version}`)
  console.log(`PPO job with flipped rewards: margin ${m0.toFixed(3)} → ${mFlipped.toFixed(3)}`)
  // measured: 0.252 → 0.280–0.285 with the rewards, → 0.185–0.189 with them flipped
  expect(m1, `margin ${m0} → ${m1}`).toBeGreaterThan(m0 + 0.01)
  expect(mFlipped, `margin ${m0} → ${mFlipped} with flipped rewards`).toBeLessThan(m0 - 0.02)
  expect(m1 - mFlipped).toBeGreaterThan(0.05)

  // only the critic learns while the actor is frozen: the policy is the starting one
  const frozen = await sort.ex.trainer.run({ adapter: "sort", baseVersion: "new", algorithm: "ppo", data: rollouts.slice(0, 64), hyper: { ...hyper, maxSteps: 3, freezingActorSteps: 3 } })
  expect(await margin(rollouts.slice(0, 64), `sort@${frozen.version}`)).toBeCloseTo(await margin(rollouts.slice(0, 64)), 5)

  // bad input says which item or field is wrong
  const one = [{ prompt: "sort ba", completion: "ab", reward: 1 }]
  await expect(sort.ex.trainer.run({ adapter: "sort", algorithm: "ppo", data: [{ prompt: "sort ba", completion: "ab", reward: "1" }] })).rejects.toThrow(/data\[0\] is not \{ prompt, completion, reward \}/)
  await expect(sort.ex.trainer.run({ adapter: "sort", algorithm: "ppo", data: one, hyper: { freezingActorSteps: -1 } })).rejects.toThrow(/freezingActorSteps must be an integer ≥ 0/)
  await expect(sort.ex.trainer.run({ adapter: "sort", algorithm: "ppo", data: one, hyper: { cliprange: 2 } })).rejects.toThrow(/cliprange/)
  await expect(sort.ex.trainer.run({ adapter: "sort", algorithm: "ppo", data: one, hyper: { criticLearningRate: 0 } })).rejects.toThrow(/criticLearningRate must be a positive number/)
}, 300_000)
