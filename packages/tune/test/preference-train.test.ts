// Preference optimization changes a real model's behaviour. A tiny GPT is first taught a toy task
// badly: for every prompt "x" it has seen the wrong answer (x+2 mod K) twice as often as the right
// one (x+1 mod K), so it gives the wrong answer p ≈ 2/3, the right one p ≈ 1/3, and greedy decoding
// answers wrong on every prompt. Then:
//  - DPO / IPO / SimPO / ORPO on pairs chosen = the right answer, rejected = each wrong answer flip it
//    (margin up, greedy accuracy ~100%);
//  - DPO on a LoRA adapter does the same while the base weights stay untouched;
//  - KTO on unpaired right/wrong labels does the same;
//  - GRPO with a verifiable reward (1 if right) raises the sampled reward and the greedy accuracy;
//  - PPO with the same reward, a KL penalty to a frozen copy and a value head does the same.
// The reference log-probs are computed once and cached on disk; a second run reads the cache.
import * as tf from "@tensorflow/tfjs"
import { mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CharTokenizer, GPT, initBackend, makeConfig } from "@moa/model"
import { Adapter } from "../src/peft/adapter.ts"
import {
  completionBatch,
  encodePreference,
  encodePrompts,
  encodeUnpaired,
  greedyCompletions,
  logpsAndValues,
  ppoConfig,
  grpoConfig,
  ktoConfig,
  pairwiseConfig,
  precomputePairReference,
  PreferenceDataError,
  tokenLogps,
  trainDPO,
  trainGRPO,
  trainKTO,
  trainPPO,
  type PairwiseAlgo,
  type Sample,
  type TokenPair,
  ValueHead,
} from "../src/preference/index.ts"

// tokens: 0 pad, 1 bos, 2 eos, 3 sep (unused), 4.. the K symbols; a prompt is [bos, x], an answer [y, eos]
const K = 5
const xs = Array.from({ length: K }, (_, x) => x)
const BOS = 1
const EOS = 2
const sym = (x: number) => 4 + (((x % K) + K) % K)
const prompt = (x: number) => [BOS, sym(x)]
const right = (x: number) => [sym(x + 1), EOS]
const wrong = (x: number) => [sym(x + 2), EOS] // the one the warm-up prefers
const others = (x: number) => xs.filter((y) => y !== (x + 1) % K).map((y) => [sym(y), EOS]) // every wrong answer
const prompts = xs.map(prompt)

let model: GPT
let sftWeights: Map<string, tf.Tensor>
let cacheDir: string

/** Greedy accuracy over the K prompts. */
const accuracy = (m: GPT) => greedyCompletions(m, prompts, 2, EOS).filter((out, x) => out[0] === right(x)[0]).length / K

/** Mean log π(right) − log π(wrong) over the prompts. */
function margin(m: GPT): number {
  return tf.tidy(() => {
    const c = completionBatch(xs.map((x) => ({ prompt: prompt(x), completion: right(x) })))
    const r = completionBatch(xs.map((x) => ({ prompt: prompt(x), completion: wrong(x) })))
    return tf.mean(tf.sub(tf.sum(tokenLogps(m, c), 1), tf.sum(tokenLogps(m, r), 1))).dataSync()[0]
  })
}

function restore(m: GPT) {
  for (const [name, v] of m.params) v.assign(sftWeights.get(name)!)
}

beforeAll(async () => {
  await initBackend("wasm")
  cacheDir = mkdtempSync(join(tmpdir(), "moa-pref-"))
  // untied head: the warm-up learns the x → answer map in ~40 steps (with tied embeddings it needs several times more)
  model = new GPT(makeConfig({ vocabSize: 4 + K, contextLength: 8, dModel: 32, nLayers: 2, nHeads: 2, tiedEmbeddings: false, bias: false }), { seed: 7 })
  // supervised warm-up on a 2:1 wrong:right mixture, answer tokens only
  const sft = xs.flatMap((x) => [
    { prompt: prompt(x), completion: wrong(x) },
    { prompt: prompt(x), completion: wrong(x) },
    { prompt: prompt(x), completion: right(x) },
  ])
  const batch = completionBatch(sft, 8)
  const opt = tf.train.adam(1e-2)
  const vars = [...model.params.values()]
  for (let s = 0; s < 50; s++) {
    opt.minimize(() => tf.neg(tf.div(tf.sum(tokenLogps(model, batch)), tf.sum(batch.mask))) as tf.Scalar, false, vars)
  }
  tf.dispose([batch.ids, batch.targets, batch.mask])
  opt.dispose()
  sftWeights = new Map([...model.params].map(([k, v]) => [k, v.clone()]))
})

afterAll(() => {
  rmSync(cacheDir, { recursive: true, force: true })
  model?.dispose()
  if (sftWeights) tf.dispose([...sftWeights.values()])
})

describe("the warm-up model prefers the wrong answer", () => {
  it("answers wrong greedily and gives the right answer less probability than the wrong one", () => {
    expect(accuracy(model)).toBe(0)
    expect(margin(model)).toBeLessThan(-0.3) // ≈ log(1/3) − log(2/3) = −0.69
  })
})

describe("pairwise preference training flips it", () => {
  // Rejecting only the preferred wrong answer is not enough here: DPO then pushes that one down and the freed
  // mass goes to a third answer (the model copies its input). Ranking the right answer over every wrong one works.
  const pairs: TokenPair[] = xs.flatMap((x) => others(x).map((rejected) => ({ prompt: prompt(x), chosen: right(x), rejected })))
  const cases: Array<[PairwiseAlgo, Record<string, number>]> = [
    ["dpo", { beta: 0.1, learningRate: 1e-2 }],
    ["ipo", { beta: 0.1, learningRate: 1e-2 }],
    ["simpo", { beta: 2.0, gamma: 0.5, learningRate: 1e-2 }],
    ["orpo", { beta: 0.5, learningRate: 1e-2 }],
  ]
  for (const [algo, params] of cases) {
    it(`${algo}: margin and greedy accuracy rise`, async () => {
      restore(model)
      const before = margin(model)
      const result = await trainDPO(model, pairs, pairwiseConfig(algo, { ...params, batchSize: pairs.length, maxSteps: 25 }), undefined, { cacheDir })
      const after = margin(model)
      expect(result.history).toHaveLength(25)
      expect(after).toBeGreaterThan(before + 1)
      expect(after).toBeGreaterThan(0)
      expect(result.history.at(-1)!["rewards/margins"]).toBeGreaterThan(result.history[0]["rewards/margins"])
      expect(result.history.at(-1)!.loss).toBeLessThan(result.history[0].loss)
      expect(accuracy(model)).toBeGreaterThanOrEqual(0.8)
    })
  }

  it("dpo with rpoAlpha: step 1 reports the chosen answers' mean token NLL, and the chosen log-prob rises more than without it", async () => {
    const chosenLogp = () =>
      tf.tidy(() => {
        const c = completionBatch(pairs.map((p) => ({ prompt: p.prompt, completion: p.chosen })))
        return [tf.sum(tokenLogps(model, c)).dataSync()[0], tf.sum(c.mask).dataSync()[0]] as const
      })
    const run = async (rpoAlpha: number) => {
      restore(model)
      const [sum0, tokens] = chosenLogp()
      const r = await trainDPO(model, pairs, pairwiseConfig("dpo", { beta: 0.1, learningRate: 1e-2, rpoAlpha, batchSize: pairs.length, maxSteps: 10 }), undefined, { cacheDir })
      return { nll0: -sum0 / tokens, first: r.history[0], rise: chosenLogp()[0] - sum0 }
    }
    const plain = await run(0)
    const rpo = await run(1)
    expect(plain.first.nll_loss).toBeUndefined()
    expect(rpo.first.nll_loss).toBeCloseTo(rpo.nll0, 4)
    expect(rpo.first.loss).toBeCloseTo(plain.first.loss + rpo.nll0, 4)
    expect(rpo.rise).toBeGreaterThan(plain.rise)
    expect(accuracy(model)).toBeGreaterThanOrEqual(0.8)
  })

  it("the reference log-probs are computed once, cached on disk, and read back for the same model and data", () => {
    restore(model)
    const a = precomputePairReference(model, pairs, { cacheDir })
    const b = precomputePairReference(model, pairs, { cacheDir })
    expect(b.fromCache).toBe(true)
    expect(b.key).toBe(a.key)
    expect(b.values).toEqual(a.values)
    // the cached numbers are the model's own log-probs of chosen and rejected
    const direct = model.logProbs(pairs.map((p) => p.prompt), pairs.map((p) => p.chosen))
    a.values.forEach((v, i) => expect(v.chosen).toBeCloseTo(direct[i], 4))
    expect(a.values[0].chosenTokens).toBe(2)
    // other data → another key; other weights → another key
    const c = precomputePairReference(model, pairs.slice(1), { cacheDir })
    expect(c.fromCache).toBe(false)
    expect(c.key).not.toBe(a.key)
    model.params.get("ln_f.weight")!.assign(tf.mul(model.params.get("ln_f.weight")!, 1.01))
    const d = precomputePairReference(model, pairs, { cacheDir })
    expect(d.fromCache).toBe(false)
    expect(d.key).not.toBe(a.key)
    expect(readdirSync(cacheDir).filter((f) => f.startsWith("ref-pairs-")).length).toBeGreaterThanOrEqual(3)
  })

  it("DPO on a LoRA adapter moves only the adapter and still flips the answer", async () => {
    restore(model)
    const adapter = Adapter.create(model, { r: 4, alpha: 8, targetModules: ["q", "k", "v", "o", "fc_in", "fc_out"], seed: 3 }, { name: "toy" })
    adapter.attach(model)
    try {
      const base = new Map([...model.params].map(([k, v]) => [k, v.dataSync().slice()]))
      const result = await trainDPO(model, pairs, pairwiseConfig("dpo", { beta: 0.1, learningRate: 1e-2, batchSize: pairs.length, maxSteps: 40 }), adapter.variables())
      expect(result.history.at(-1)!["rewards/margins"]).toBeGreaterThan(0.3) // β·Δ: chosen-vs-rejected log-ratio moved by > 3 nats
      expect(accuracy(model)).toBeGreaterThanOrEqual(0.8)
      for (const [k, v] of model.params) expect(Array.from(v.dataSync()), `base weight ${k} must not move`).toEqual(Array.from(base.get(k)!))
    } finally {
      adapter.detach()
      tf.dispose(adapter.variables())
    }
    expect(accuracy(model)).toBe(0) // the base alone still prefers the wrong answer
  })

  it("bad pairs fail before training with the example's index", async () => {
    restore(model)
    const bad = [...pairs, { prompt: [], chosen: right(0), rejected: wrong(0) }]
    await expect(trainDPO(model, bad, pairwiseConfig("dpo"))).rejects.toThrow(PreferenceDataError)
    await expect(trainDPO(model, bad, pairwiseConfig("dpo"))).rejects.toThrow(new RegExp(`pair \\(chosen\\) ${pairs.length}: prompt must be a non-empty array`))
    const long = [{ prompt: prompt(0), chosen: [4, 4, 4, 4, 4, 4, 4, 4], rejected: wrong(0) }]
    await expect(trainDPO(model, long, pairwiseConfig("dpo"))).rejects.toThrow(/context is 8/)
    await expect(trainDPO(model, pairs, pairwiseConfig("dpo"), undefined, { reference: [] })).rejects.toThrow(
      new RegExp(`0 reference entries for ${pairs.length} pairs`),
    )
    await expect(trainDPO(model, pairs, pairwiseConfig("dpo"), [])).rejects.toThrow(/no trainable variables/)
    await expect(trainKTO(model, [{ prompt: prompt(0), completion: right(0), label: true }], ktoConfig())).rejects.toThrow(/at least 2 examples/)
    const unlabeled = [
      { prompt: prompt(0), completion: right(0), label: true },
      { prompt: prompt(1), completion: right(1), label: "good" as never },
    ]
    await expect(trainKTO(model, unlabeled, ktoConfig())).rejects.toThrow(/example 1: label must be true \(desirable\) or false/)
    await expect(trainGRPO(model, [[]], () => [], grpoConfig())).rejects.toThrow(/prompt 0: must be a non-empty array of token ids/)
  })

  it("an abort signal stops training between steps, and the event loop runs during training", async () => {
    restore(model)
    const controller = new AbortController()
    let ticks = 0
    const timer = setInterval(() => ticks++, 0)
    try {
      const result = await trainDPO(model, pairs, pairwiseConfig("dpo", { batchSize: 4, maxSteps: 50 }), undefined, {
        onStep: (step) => void (step === 3 && controller.abort()),
        signal: controller.signal,
      })
      expect(result.stopped).toBe("aborted")
      expect(result.steps).toBe(3)
      expect(result.history).toHaveLength(3)
    } finally {
      clearInterval(timer)
    }
    expect(ticks).toBeGreaterThan(0) // timers fired between steps
  })
})

describe("KTO on unpaired labels", () => {
  it("raises the margin and the greedy accuracy", async () => {
    restore(model)
    const examples = xs.flatMap((x) => [
      { prompt: prompt(x), completion: right(x), label: true },
      ...others(x).map((completion) => ({ prompt: prompt(x), completion, label: false })),
    ])
    const before = margin(model)
    const result = await trainKTO(model, examples, ktoConfig({ beta: 0.1, batchSize: examples.length, maxSteps: 30, learningRate: 1e-2, desirableWeight: K - 1 }))
    expect(margin(model)).toBeGreaterThan(before + 1)
    expect(result.history.at(-1)!["rewards/margins"]).toBeGreaterThan(1)
    expect(result.history.at(-1)!.kl).toBeGreaterThanOrEqual(0)
    expect(accuracy(model)).toBeGreaterThanOrEqual(0.8)
  })
})

describe("GRPO with a verifiable reward", () => {
  it("raises the sampled reward and the greedy accuracy", async () => {
    restore(model)
    const answer = (p: number[]) => right(p[1] - 4)[0]
    const result = await trainGRPO(
      model,
      prompts,
      (samples) => samples.map((s) => (s.completion[0] === answer(s.prompt) ? 1 : 0)),
      grpoConfig({ numGenerations: 8, batchSize: K, maxSteps: 12, learningRate: 2e-3, maxCompletionLength: 2, seed: 5 }),
      undefined,
      { eosTokenId: EOS },
    )
    const rewards = result.history.map((h) => h.reward)
    const first = rewards[0]
    const last = rewards.slice(-3).reduce((a, b) => a + b, 0) / 3
    expect(first).toBeLessThan(0.6) // ≈ 1/3 at the start
    expect(last).toBeGreaterThan(first + 0.3)
    expect(accuracy(model)).toBeGreaterThanOrEqual(0.8)
  })

  it("a reward function that throws or returns the wrong count is reported clearly", async () => {
    restore(model)
    const cfg = grpoConfig({ numGenerations: 2, batchSize: 1, maxSteps: 1, maxCompletionLength: 2 })
    await expect(trainGRPO(model, prompts, () => { throw new Error("judge offline") }, cfg)).rejects.toThrow(/reward function threw at step 1: judge offline/)
    await expect(trainGRPO(model, prompts, () => [1], cfg)).rejects.toThrow(/returned 1 values for 2 samples/)
    await expect(trainGRPO(model, prompts, (s) => s.map(() => Number.NaN), cfg)).rejects.toThrow(/rewards must be finite/)
    await expect(trainGRPO(model, prompts, (s) => s.map(() => 1), grpoConfig({ beta: 0.1 }))).rejects.toThrow(/GRPOConfig\.beta: .*options\.reference/)

    await expect(trainGRPO(model, prompts, [() => [1, 1], () => [1, 1]], grpoConfig({ ...cfg, rewardWeights: [1] }))).rejects.toThrow(/GRPOConfig\.rewardWeights: has 1 weights for 2 reward functions/)
  })

  it("several reward functions are summed with their weights and logged one by one", async () => {
    restore(model)
    const correct = (s: Sample[]) => s.map((x) => (x.completion[0] === right(x.prompt[1] - 4)[0] ? 1 : 0))
    const short = (s: Sample[]) => s.map((x) => -x.completion.length)
    const seen: number[][] = []
    const result = await trainGRPO(
      model,
      prompts,
      [correct, short, (s: Sample[]) => (seen.push(correct(s).map((c, i) => c + 0.5 * short(s)[i])), s.map(() => 0))],
      grpoConfig({ numGenerations: 4, batchSize: K, maxSteps: 1, maxCompletionLength: 2, rewardWeights: [1, 0.5, 1] }),
      undefined,
      { eosTokenId: EOS },
    )
    const m = result.history[0]
    expect(Object.keys(m)).toEqual(expect.arrayContaining(["rewards/correct/mean", "rewards/short/mean", "rewards/reward_2/mean"]))
    const expected = seen[0].reduce((a, b) => a + b, 0) / seen[0].length
    expect(m.reward).toBeCloseTo(expected, 5)
    expect(m.reward).toBeCloseTo(m["rewards/correct/mean"] + 0.5 * m["rewards/short/mean"], 5)
  })
})

describe("PPO with a value head and a KL penalty", () => {
  it("raises the score and the greedy accuracy", async () => {
    restore(model)
    const reference = new GPT(model.config, { seed: 1 }) // a frozen copy of the warm-up model
    for (const [k, v] of model.params) reference.params.get(k)!.assign(v)
    const answer = (p: number[]) => right(p[1] - 4)[0]
    try {
      const result = await trainPPO(
        model,
        [...prompts, ...prompts, ...prompts, ...prompts],
        (samples) => samples.map((s) => (s.completion[0] === answer(s.prompt) ? 1 : 0)),
        ppoConfig({ batchSize: 4 * K, maxSteps: 6, learningRate: 2e-3, maxCompletionLength: 2, klCoef: 0.05, seed: 5 }),
        undefined,
        { eosTokenId: EOS, reference },
      )
      const scores = result.history.map((h) => h["objective/scores"])
      const last = scores.slice(-3).reduce((a, b) => a + b, 0) / 3
      expect(scores[0]).toBeLessThan(0.6)
      expect(last).toBeGreaterThan(scores[0] + 0.3)
      expect(result.history.at(-1)!["objective/kl"]).toBeGreaterThan(0) // the policy moved away from the reference
      expect(accuracy(model)).toBeGreaterThanOrEqual(0.8)
      result.valueHead.dispose()
    } finally {
      reference.dispose()
    }
  })
})

describe("PPO's value head", () => {
  it("on the shared trunk its loss trains the model too; detached (detachTrunk) only itself", () => {
    const batch = completionBatch(xs.map((x) => ({ prompt: prompt(x), completion: right(x) })))
    const vars = [...model.params.values()]
    const gradNorms = (head: ValueHead) =>
      tf.tidy(() => {
        const { grads } = tf.variableGrads(() => tf.mean(tf.square(tf.sub(logpsAndValues(model, head, batch, 1).values, 1))) as tf.Scalar, [...vars, ...head.variables()])
        const norm = (vs: tf.Variable[]) => Math.sqrt(vs.reduce((a, v) => a + (grads[v.name] ? tf.sum(tf.square(grads[v.name]!)).dataSync()[0]! : 0), 0))
        return { trunk: norm(vars), head: norm(head.variables()) }
      })
    const shared = new ValueHead(32, 3)
    const detached = new ValueHead(32, 3, { detachTrunk: true })
    try {
      const a = gradNorms(shared)
      const b = gradNorms(detached)
      expect(a.trunk).toBeGreaterThan(1e-4)
      expect(b.trunk).toBe(0)
      expect(b.head).toBeCloseTo(a.head, 5) // the same head gradient either way
      // and the forward pass is the same
      const [va, vb] = [logpsAndValues(model, shared, batch, 1), logpsAndValues(model, detached, batch, 1)]
      expect(Array.from(vb.values.dataSync())).toEqual(Array.from(va.values.dataSync()))
      tf.dispose([va.logps, va.values, vb.logps, vb.values])
    } finally {
      tf.dispose([batch.ids, batch.targets, batch.mask])
      shared.dispose()
      detached.dispose()
    }
  })
})

describe("memory", () => {
  it("a second run of each trainer leaves no extra tensors behind", async () => {
    restore(model)
    const pairs = xs.map((x) => ({ prompt: prompt(x), chosen: right(x), rejected: wrong(x) }))
    const labelled = xs.flatMap((x) => [
      { prompt: prompt(x), completion: right(x), label: true },
      { prompt: prompt(x), completion: wrong(x), label: false },
    ])
    const reward = (s: { completion: number[] }[]) => s.map((x, i) => (i % 2) + x.completion.length)
    const runAll = async () => {
      await trainDPO(model, pairs, pairwiseConfig("dpo", { batchSize: K, maxSteps: 2 }))
      await trainDPO(model, pairs, pairwiseConfig("orpo", { batchSize: K, maxSteps: 2 }))
      await trainKTO(model, labelled, ktoConfig({ batchSize: 2 * K, maxSteps: 2 }))
      await trainGRPO(model, prompts, reward, grpoConfig({ numGenerations: 2, batchSize: K, maxSteps: 2, maxCompletionLength: 2, numIterations: 2, beta: 0.1 }), undefined, { eosTokenId: EOS, reference: model })
      const p = await trainPPO(model, prompts, reward, ppoConfig({ batchSize: K, maxSteps: 2, maxCompletionLength: 2, numPpoEpochs: 2 }), undefined, { eosTokenId: EOS, reference: model })
      p.valueHead.dispose()
    }
    await runAll() // warms the model's own caches (causal masks per length)
    const before = tf.memory().numTensors
    await runAll()
    expect(tf.memory().numTensors).toBe(before)
  })
})

describe("TRL's text dataset shapes", () => {
  const tok = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz0123456789 +="])
  it("encodes prompt/chosen/rejected, prompt/completion/label and prompt records with bos and eos", () => {
    const [p] = encodePreference([{ prompt: "add 1 2=", chosen: "3", rejected: "4" }], tok)
    expect(p.prompt).toEqual([tok.bos, ...tok.encode("add 1 2=")])
    expect(p.chosen).toEqual([...tok.encode("3"), tok.eos])
    expect(p.rejected).toEqual([...tok.encode("4"), tok.eos])
    const [u] = encodeUnpaired([{ prompt: "x", completion: "y", label: false }], tok, { separator: [tok.sep] })
    expect(u).toEqual({ prompt: [tok.bos, ...tok.encode("x"), tok.sep], completion: [...tok.encode("y"), tok.eos], label: false })
    expect(encodePrompts(["ab", { prompt: "c" }], tok)).toEqual([[tok.bos, ...tok.encode("ab")], [tok.bos, ...tok.encode("c")]])
  })
  it("says which record and field is wrong", () => {
    expect(() => encodeUnpaired([{ prompt: "a", completion: "b", label: "yes" as never }], tok)).toThrow(/record 0: "label" must be true or false/)
    expect(() => encodePreference([{ prompt: "a", chosen: "b", rejected: "c" }, { prompt: "a", chosen: 3 as never, rejected: "c" }], tok)).toThrow(/record 1: "chosen" must be a string/)
  })
})
