// The toy experiment of test/preference-train.test.ts as a script that prints a table, so the
// numbers in docs/preference.md come from a command anyone can run:
//   npx tsx packages/tune/src/preference/demo.ts
// A tiny GPT is warmed up on a 2:1 wrong:right mixture (it then answers wrong greedily), and each
// objective starts again from that warm-up.
import * as tf from "@tensorflow/tfjs"
import { GPT, initBackend, makeConfig } from "@moa/model"
import { grpoConfig } from "./grpo.ts"
import { ktoConfig } from "./kto.ts"
import { completionBatch, greedyCompletions, tokenLogps } from "./policy.ts"
import { ppoConfig } from "./ppo.ts"
import { pairwiseConfig, trainDPO, trainGRPO, trainKTO, trainPPO, type PairwiseAlgo, type TrainResult } from "./trainers.ts"

const K = 5
const BOS = 1
const EOS = 2
const xs = Array.from({ length: K }, (_, x) => x)
const sym = (x: number) => 4 + (((x % K) + K) % K)
const prompt = (x: number) => [BOS, sym(x)]
const right = (x: number) => [sym(x + 1), EOS]
const wrong = (x: number) => [sym(x + 2), EOS]
const others = (x: number) => xs.filter((y) => y !== (x + 1) % K).map((y) => [sym(y), EOS])
const prompts = xs.map(prompt)
const answer = (p: number[]) => right(p[1] - 4)[0]
const reward = (samples: { prompt: number[]; completion: number[] }[]) => samples.map((s) => (s.completion[0] === answer(s.prompt) ? 1 : 0))

const accuracy = (m: GPT) => greedyCompletions(m, prompts, 2, EOS).filter((out, x) => out[0] === right(x)[0]).length / K
const margin = (m: GPT) =>
  tf.tidy(() => {
    const c = completionBatch(xs.map((x) => ({ prompt: prompt(x), completion: right(x) })))
    const r = completionBatch(xs.map((x) => ({ prompt: prompt(x), completion: wrong(x) })))
    return tf.mean(tf.sub(tf.sum(tokenLogps(m, c), 1), tf.sum(tokenLogps(m, r), 1))).dataSync()[0]
  })

async function main() {
  const backend = await initBackend(process.env.MOA_BACKEND ? undefined : "wasm")
  const config = makeConfig({ vocabSize: 4 + K, contextLength: 8, dModel: 32, nLayers: 2, nHeads: 2, tiedEmbeddings: false, bias: false })
  const model = new GPT(config, { seed: 7 })
  const sft = completionBatch(xs.flatMap((x) => [{ prompt: prompt(x), completion: wrong(x) }, { prompt: prompt(x), completion: wrong(x) }, { prompt: prompt(x), completion: right(x) }]))
  const opt = tf.train.adam(1e-2)
  for (let s = 0; s < 50; s++) opt.minimize(() => tf.neg(tf.div(tf.sum(tokenLogps(model, sft)), tf.sum(sft.mask))) as tf.Scalar, false, [...model.params.values()])
  const warm = new Map([...model.params].map(([k, v]) => [k, v.clone()]))
  const restore = () => model.params.forEach((v, k) => v.assign(warm.get(k)!))
  const m0 = margin(model)
  const a0 = accuracy(model)
  console.log(`backend ${backend.name}; ${model.numParams()} parameters; warm-up: margin log π(right) − log π(wrong) = ${m0.toFixed(2)}, greedy accuracy ${(100 * a0).toFixed(0)}%\n`)
  console.log("| objective | steps | margin before → after | greedy accuracy before → after | last-step metric | seconds |")
  console.log("|---|---|---|---|---|---|")
  const notes: string[] = []
  const collapsed: number[] = []
  const pairs = xs.flatMap((x) => others(x).map((rejected) => ({ prompt: prompt(x), chosen: right(x), rejected })))
  const row = async (name: string, metric: string, run: () => TrainResult | Promise<TrainResult>) => {
    restore()
    const t0 = performance.now()
    const r = await run()
    const secs = (performance.now() - t0) / 1000
    const last = r.history.at(-1)!
    console.log(`| ${name} | ${r.steps} | ${m0.toFixed(2)} → ${margin(model).toFixed(2)} | ${(100 * a0).toFixed(0)}% → ${(100 * accuracy(model)).toFixed(0)}% | ${metric} ${last[metric].toFixed(3)} | ${secs.toFixed(1)} |`)
  }
  const pairwise: Array<[PairwiseAlgo, Record<string, number>]> = [
    ["dpo", { beta: 0.1 }],
    ["ipo", { beta: 0.1 }],
    ["simpo", { beta: 2.0, gamma: 0.5 }],
    ["orpo", { beta: 0.5 }],
  ]
  for (const [algo, p] of pairwise)
    await row(algo, "rewards/margins", () => trainDPO(model, pairs, pairwiseConfig(algo, { ...p, learningRate: 1e-2, batchSize: pairs.length, maxSteps: 25 })))
  // the same DPO with only the preferred wrong answer as rejected: the freed probability goes elsewhere
  const single = xs.map((x) => ({ prompt: prompt(x), chosen: right(x), rejected: wrong(x) }))
  await row("dpo, one rejected answer per prompt", "rewards/margins", () =>
    trainDPO(model, single, pairwiseConfig("dpo", { beta: 0.1, learningRate: 1e-2, batchSize: single.length, maxSteps: 25 })),
  )
  const greedy = greedyCompletions(model, prompts, 2, EOS)
  notes.push(`after "dpo, one rejected answer per prompt" the greedy answers are ${greedy.map((o, x) => `${x}→${o[0] - 4}`).join(", ")} (right: x+1, rejected: x+2)`)
  const examples = xs.flatMap((x) => [{ prompt: prompt(x), completion: right(x), label: true }, ...others(x).map((completion) => ({ prompt: prompt(x), completion, label: false }))])
  await row("kto", "rewards/margins", () => trainKTO(model, examples, ktoConfig({ beta: 0.1, batchSize: examples.length, maxSteps: 30, learningRate: 1e-2, desirableWeight: K - 1 })))
  await row("grpo", "reward", () =>
    trainGRPO(model, prompts, reward, grpoConfig({ numGenerations: 8, batchSize: K, maxSteps: 12, learningRate: 2e-3, maxCompletionLength: 2, seed: 5 }), undefined, { eosTokenId: EOS }),
  )
  await row("grpo, lr 1e-2", "reward_std", () =>
    trainGRPO(model, prompts, reward, grpoConfig({ numGenerations: 8, batchSize: K, maxSteps: 12, learningRate: 1e-2, maxCompletionLength: 2, seed: 5 }), undefined, {
      eosTokenId: EOS,
      onStep: (step, m) => void (m.reward_std === 0 && collapsed.push(step)),
    }),
  )
  notes.push(`"grpo, lr 1e-2": steps whose groups all had zero reward spread (no gradient): ${collapsed.join(", ") || "none"}`)
  const reference = new GPT(config, { seed: 1 })
  restore()
  model.params.forEach((v, k) => reference.params.get(k)!.assign(v))
  await row("ppo", "objective/scores", async () => {
    const r = await trainPPO(model, [...prompts, ...prompts, ...prompts, ...prompts], reward, ppoConfig({ batchSize: 4 * K, maxSteps: 6, learningRate: 2e-3, maxCompletionLength: 2, seed: 5 }), undefined, { eosTokenId: EOS, reference })
    r.valueHead.dispose()
    return r
  })
  reference.dispose()
  model.dispose()
  console.log("\n" + notes.map((n) => `- ${n}`).join("\n"))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
