import { describe, expect, it } from "vitest"
import * as tf from "@tensorflow/tfjs"
import { SKILLS, generate, allCapitals } from "@moa/skills"
import { CharTokenizer, GPT, makeConfig } from "@moa/model"
import {
  Gate,
  pooledHiddenFeatures,
  decodeSafetensors,
  defaultGateConfig,
  encodeSafetensors,
  evaluateRouting,
  loadBalanceLoss,
  ngramFeatures,
  trainGate,
} from "../src/index.ts"

const skillSet = (split: "train" | "test", n: number, seed: number) =>
  SKILLS.flatMap((skill) => (skill === "capital" ? allCapitals().filter((_, i) => i % 7 === seed % 7).slice(0, n) : generate(skill, { n, seed, split })))

describe("gate", () => {
  it("an n-gram gate learns to route held-out questions of the five skills (≥ 99% top-1)", async () => {
    const features = ngramFeatures({ dim: 512 })
    const train = skillSet("train", 60, 1)
    const test = skillSet("test", 100, 2)
    const gate = new Gate(defaultGateConfig(SKILLS, features.spec))
    const x = await features.extract(train.map((e) => e.question))
    const y = train.map((e) => Float32Array.from(SKILLS, (s) => (s === e.skill ? 1 : 0)))
    const before = await evaluateRouting(gate, features, test.map((e) => ({ prompt: e.question, expert: e.skill })))
    const { history } = await trainGate(gate, x, y, { epochs: 20 })
    const after = await evaluateRouting(gate, features, test.map((e) => ({ prompt: e.question, expert: e.skill, skill: e.skill })))
    expect(before.top1).toBeLessThan(0.6)
    expect(history.at(-1)!.ce).toBeLessThan(history[0].ce / 5)
    expect(after.top1).toBeGreaterThanOrEqual(0.99)
    for (const s of SKILLS) expect(after.perSkill[s].top1).toBeGreaterThanOrEqual(0.97)
    gate.dispose()
  })

  it("the load-balancing loss is 1 for uniform routing and E when collapsed", () => {
    const E = 4
    const uniform = tf.tidy(() => loadBalanceLoss(tf.oneHot(tf.tensor1d([0, 1, 2, 3, 0, 1, 2, 3], "int32"), E).toFloat() as tf.Tensor2D).dataSync()[0])
    const collapsed = tf.tidy(() => loadBalanceLoss(tf.oneHot(tf.tensor1d([2, 2, 2, 2], "int32"), E).toFloat() as tf.Tensor2D).dataSync()[0])
    expect(uniform).toBeCloseTo(1, 5)
    expect(collapsed).toBeCloseTo(E, 5)
  })

  it("the load-balancing loss spreads load when one expert is only somewhat better", async () => {
    // Expert "a" answers best on 70% of the questions, "b" on 30%, unpredictably from the text:
    // cross-entropy alone sends nearly everything to "a"; the auxiliary loss spreads the load.
    const features = ngramFeatures({ dim: 256 })
    const qs = generate("add", { n: 300, seed: 3 }).map((e) => e.question)
    const x = await features.extract(qs)
    const y = qs.map((_, i) => (i % 10 < 7 ? Float32Array.from([1, 0]) : Float32Array.from([0, 1])))
    const run = async (lbCoef: number) => {
      const gate = new Gate(defaultGateConfig(["a", "b"], features.spec, { noisy: false }), 7)
      await trainGate(gate, x, y, { epochs: 15, lbCoef, lr: 0.01 })
      const r = await evaluateRouting(gate, features, qs.map((prompt) => ({ prompt, expert: "a" })))
      gate.dispose()
      return r
    }
    const without = await run(0)
    const withLb = await run(1)
    expect(without.load.a).toBeGreaterThan(0.85)
    expect(withLb.load.b).toBeGreaterThan(0.3)
    expect(withLb.lbLoss).toBeLessThan(without.lbLoss)
  })

  it("noisy top-k: training noise is learned and only applied in training", () => {
    const features = ngramFeatures({ dim: 64 })
    const gate = new Gate(defaultGateConfig(["a", "b", "c"], features.spec, { hidden: 16 }))
    const x = tf.randomNormal([5, 64]) as tf.Tensor2D
    const clean1 = gate.logits(x).arraySync()
    const clean2 = gate.logits(x).arraySync()
    const noisy = gate.logits(x, true).arraySync()
    expect(clean1).toEqual(clean2)
    expect(noisy).not.toEqual(clean1)
    x.dispose()
    gate.dispose()
  })

  it("decide: temperature, top-k, capacity, confidence threshold with fallback or widened k", () => {
    const features = ngramFeatures({ dim: 64 })
    const experts = ["add", "sort", "base"]
    const p = [0.7, 0.2, 0.1]
    const g = new Gate(defaultGateConfig(experts, features.spec, { k: 1, threshold: 0.5, fallback: "base" }))
    expect(g.decide(p).chosen).toEqual(["add"])
    expect(g.decide(p, { k: 2 }).chosen).toEqual(["add", "sort"])
    // a dead expert gets nothing; a busy one gets less
    const dead = g.decide(p, { load: { add: { healthy: false, inflight: 0, errorRate: 0 } } })
    expect(dead.adjusted.add).toBe(0)
    expect(dead.chosen).toEqual(["sort"])
    const busy = g.decide([0.45, 0.4, 0.15], { k: 1, load: { add: { healthy: true, inflight: 8, errorRate: 0 } } })
    expect(busy.chosen).toEqual(["sort"])
    // low confidence → the fallback expert
    const low = g.decide([0.4, 0.35, 0.25])
    expect(low.rule).toBe("fallback")
    expect(low.chosen).toEqual(["base"])
    // no fallback → k widened to 2k
    const w = new Gate(defaultGateConfig(experts, features.spec, { k: 1, threshold: 0.5 }))
    const wide = w.decide([0.4, 0.35, 0.25])
    expect(wide.rule).toBe("widened")
    expect(wide.chosen).toEqual(["add", "sort"])
    expect(wide.weights[0] + wide.weights[1]).toBeCloseTo(1, 6)
    // everyone down is an error that says what to do
    expect(() => g.decide(p, { load: Object.fromEntries(experts.map((e) => [e, { healthy: false, inflight: 0, errorRate: 0 }])) })).toThrow(/no expert is available/)
    // the temperature flattens the probabilities
    const hot = new Gate(defaultGateConfig(experts, features.spec, { temperature: 5 }))
    const cold = new Gate(defaultGateConfig(experts, features.spec, { temperature: 0.2 }))
    hot.params.get("out.b")!.assign(tf.tensor1d([2, 0, 0]))
    cold.params.get("out.b")!.assign(tf.tensor1d([2, 0, 0]))
    const [z] = [new Float32Array(64)]
    expect(cold.probs([z])[0][0]).toBeGreaterThan(hot.probs([z])[0][0])
    for (const gg of [g, w, hot, cold]) gg.dispose()
  })

  it("rejects bad configs with a message that says what is wrong", () => {
    const spec = ngramFeatures({ dim: 64 }).spec
    expect(() => new Gate(defaultGateConfig(["a", "a"], spec))).toThrow(/unique/)
    expect(() => new Gate(defaultGateConfig(["a", "b"], spec, { k: 3 }))).toThrow(/k must be/)
    expect(() => new Gate(defaultGateConfig(["a", "b"], spec, { fallback: "c" }))).toThrow(/fallback "c"/)
  })

  it("saves to safetensors (+ config) and loads back to the same probabilities", async () => {
    const features = ngramFeatures({ dim: 128 })
    const gate = new Gate(defaultGateConfig(["a", "b", "c"], features.spec, { hidden: 8 }), 3)
    const bytes = gate.toSafetensors({ version: "v1" })
    const { tensors, metadata } = decodeSafetensors(bytes)
    expect(metadata.version).toBe("v1")
    expect(tensors["out.weight"].shape).toEqual([3, 8]) // PyTorch nn.Linear layout [out, in]
    expect(tensors["fc1.weight"].shape).toEqual([8, 128])
    const copy = Gate.fromSafetensors(JSON.parse(JSON.stringify(gate.config)), bytes)
    const x = await features.extract(["add 1 2", "sort cba"])
    expect(copy.probs(x)).toEqual(gate.probs(x))
    expect(() => Gate.fromSafetensors({ ...gate.config, hidden: 4 }, bytes)).toThrow(/shape/)
    expect(() => decodeSafetensors(encodeSafetensors({ t: { shape: [2], data: new Float32Array([1, 2]) } }).subarray(0, 4))).toThrow(/not a safetensors/)
    gate.dispose()
    copy.dispose()
  })

  it("pooled hidden-state features of a GPT feed the same gate (one vector of dModel per prompt)", async () => {
    const qs = SKILLS.flatMap((skill) => (skill === "capital" ? allCapitals().slice(0, 30) : generate(skill, { n: 30, seed: 5 })))
    const tok = new CharTokenizer([...new Set(qs.flatMap((e) => [...e.question]))].sort())
    const gpt = new GPT(makeConfig({ vocabSize: tok.vocabSize, contextLength: 64, dModel: 32, nLayers: 1, nHeads: 2 }))
    const f = pooledHiddenFeatures(gpt, tok)
    const x = await f.extract(qs.map((e) => e.question))
    expect(x[0]).toHaveLength(32)
    expect(f.spec).toEqual({ kind: "external", dim: 32, name: "base-mean-hidden" })
    const gate = new Gate(defaultGateConfig(SKILLS, f.spec))
    await trainGate(gate, x, qs.map((e) => Float32Array.from(SKILLS, (s) => (s === e.skill ? 1 : 0))), { epochs: 20 })
    const r = await evaluateRouting(gate, f, qs.map((e) => ({ prompt: e.question, expert: e.skill })))
    expect(r.top1).toBeGreaterThan(0.5) // well above chance (0.2) even with random-init features
    gate.dispose()
  })
})
