// The preference objectives against PyTorch reference values (fixtures/preference_reference.py,
// written from TRL's definitions), a few values worked out by hand, gradients, and config errors.
import * as tf from "@tensorflow/tfjs"
import { readFileSync } from "node:fs"
import { beforeAll, describe, expect, it } from "vitest"
import {
  dpoConfig,
  dpoLoss,
  gae,
  groupAdvantages,
  grpoConfig,
  grpoLoss,
  klMismatchIndices,
  ktoConfig,
  ktoLoss,
  orpoConfig,
  orpoLoss,
  ppoConfig,
  ppoLoss,
  ppoRewards,
  datasetShapeOf,
  PREFERENCE_ALGOS,
  preferenceConfig,
  PreferenceConfigError,
  simpoConfig,
  simpoLoss,
  type LossOutput,
} from "../src/preference/index.ts"

const fixture = JSON.parse(readFileSync(new URL("./fixtures/preference_reference.json", import.meta.url), "utf8"))
const TOL = 1e-5

beforeAll(async () => {
  await tf.setBackend("cpu")
})

type Nested = number | Nested[]
const t1 = (x: number[]) => tf.tensor1d(x, "float32")
const t2 = (x: number[][]) => tf.tensor2d(x, undefined, "float32")

function close(actual: Nested, expected: Nested, what: string, tol = TOL) {
  if (Array.isArray(expected)) {
    expect(Array.isArray(actual), `${what} should be an array`).toBe(true)
    const a = actual as Nested[]
    expect(a.length, `${what} length`).toBe(expected.length)
    expected.forEach((e, i) => close(a[i], e, `${what}[${i}]`, tol))
    return
  }
  const a = actual as number
  const scale = Math.max(1, Math.abs(expected))
  expect(Math.abs(a - expected) / scale, `${what}: got ${a}, torch says ${expected}`).toBeLessThanOrEqual(tol)
}

const read = (x: tf.Tensor): Nested => x.arraySync() as Nested

/** Run a loss, compare loss, per-example losses and metrics with the fixture case. */
function checkOutput(name: string, out: LossOutput, c: { loss: number; losses?: number[]; metrics: Record<string, number> }) {
  close(read(out.loss), c.loss, `${name} loss`)
  if (c.losses) close(read(out.losses), c.losses, `${name} losses`)
  for (const [k, v] of Object.entries(c.metrics)) {
    expect(out.metrics[k], `${name} metric ${k} is reported`).toBeDefined()
    close(read(out.metrics[k]), v, `${name} ${k}`)
  }
}

describe("DPO (sigmoid / robust / hinge / ipo) matches PyTorch", () => {
  for (const c of fixture.dpo) {
    it(`${c.config.lossType} β=${c.config.beta} ε=${c.config.labelSmoothing}: loss, metrics and gradients`, () => {
      tf.tidy(() => {
        const inp = {
          policyChosenLogps: t1(c.input.policyChosenLogps),
          policyRejectedLogps: t1(c.input.policyRejectedLogps),
          refChosenLogps: t1(c.input.refChosenLogps),
          refRejectedLogps: t1(c.input.refRejectedLogps),
        }
        checkOutput("dpo", dpoLoss(inp, c.config), c)
        const g = tf.grads((pc: tf.Tensor, pr: tf.Tensor) =>
          dpoLoss({ ...inp, policyChosenLogps: pc as tf.Tensor1D, policyRejectedLogps: pr as tf.Tensor1D }, c.config).loss,
        )([inp.policyChosenLogps, inp.policyRejectedLogps])
        close(read(g[0]), c.grads.policyChosenLogps, "d loss / d policy chosen")
        close(read(g[1]), c.grads.policyRejectedLogps, "d loss / d policy rejected")
      })
    })
  }

  it("by hand: equal policy and reference gives h = 0, loss log 2, zero rewards", () => {
    tf.tidy(() => {
      const x = t1([-3, -5])
      const out = dpoLoss({ policyChosenLogps: x, policyRejectedLogps: t1([-4, -2]), refChosenLogps: x, refRejectedLogps: t1([-4, -2]) }, dpoConfig())
      expect(out.loss.dataSync()[0]).toBeCloseTo(Math.log(2), 6)
      expect(out.metrics["rewards/margins"].dataSync()[0]).toBeCloseTo(0, 7)
    })
  })

  it("by hand: h = 2, β = 0.5 → sigmoid −log σ(1) = 0.3132617, hinge 0, ipo (2 − 1)² = 1", () => {
    tf.tidy(() => {
      const inp = { policyChosenLogps: t1([-1]), policyRejectedLogps: t1([-3]), refChosenLogps: t1([-2]), refRejectedLogps: t1([-2]) }
      expect(dpoLoss(inp, { beta: 0.5, lossType: "sigmoid", labelSmoothing: 0 }).loss.dataSync()[0]).toBeCloseTo(0.3132617, 6)
      expect(dpoLoss(inp, { beta: 0.5, lossType: "hinge", labelSmoothing: 0 }).loss.dataSync()[0]).toBeCloseTo(0, 7)
      expect(dpoLoss(inp, { beta: 0.5, lossType: "ipo", labelSmoothing: 0 }).loss.dataSync()[0]).toBeCloseTo(1, 6)
      // rewards: chosen β(−1 − −2) = 0.5, rejected β(−3 − −2) = −0.5, accuracy 1
      const m = dpoLoss(inp, dpoConfig({ beta: 0.5 })).metrics
      expect(m["rewards/chosen"].dataSync()[0]).toBeCloseTo(0.5, 6)
      expect(m["rewards/rejected"].dataSync()[0]).toBeCloseTo(-0.5, 6)
      expect(m["rewards/accuracies"].dataSync()[0]).toBe(1)
    })
  })

  it("by hand: rpoAlpha adds α · the chosen NLL to the loss, with gradient α on it (TRL's rpo_alpha)", () => {
    tf.tidy(() => {
      const inp = { policyChosenLogps: t1([-1]), policyRejectedLogps: t1([-3]), refChosenLogps: t1([-2]), refRejectedLogps: t1([-2]) }
      const nll = tf.scalar(0.75)
      const out = dpoLoss({ ...inp, chosenNll: nll }, dpoConfig({ beta: 0.5, rpoAlpha: 2 }))
      expect(out.loss.dataSync()[0]).toBeCloseTo(0.3132617 + 2 * 0.75, 6)
      expect(out.metrics.nll_loss.dataSync()[0]).toBeCloseTo(0.75, 7)
      const g = tf.grad((x: tf.Tensor) => dpoLoss({ ...inp, chosenNll: x as tf.Scalar }, dpoConfig({ rpoAlpha: 2 })).loss)(nll)
      expect(g.dataSync()[0]).toBeCloseTo(2, 6)
      expect(() => dpoLoss(inp, dpoConfig({ rpoAlpha: 1 }))).toThrow(/chosenNll/)
      expect(() => dpoConfig({ rpoAlpha: -1 })).toThrow(/rpoAlpha/)
    })
  })

  it("referenceFree ignores the reference log-probs", () => {
    tf.tidy(() => {
      const inp = { policyChosenLogps: t1([-1]), policyRejectedLogps: t1([-3]), refChosenLogps: t1([-9]), refRejectedLogps: t1([0]) }
      const a = dpoLoss(inp, { ...dpoConfig({ beta: 0.5 }), referenceFree: true }).loss.dataSync()[0]
      expect(a).toBeCloseTo(Math.log1p(Math.exp(-1)), 6)
    })
  })
})

describe("SimPO and ORPO match PyTorch", () => {
  for (const c of fixture.simpo) {
    it(`SimPO β=${c.config.beta} γ=${c.config.gamma} sft=${c.config.sftWeight}`, () => {
      tf.tidy(() => {
        const inp = { chosenLogps: t2(c.input.chosenLogps), chosenMask: t2(c.input.chosenMask), rejectedLogps: t2(c.input.rejectedLogps), rejectedMask: t2(c.input.rejectedMask) }
        checkOutput("simpo", simpoLoss(inp, c.config), c)
        const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => simpoLoss({ ...inp, chosenLogps: a as tf.Tensor2D, rejectedLogps: b as tf.Tensor2D }, c.config).loss)([
          inp.chosenLogps,
          inp.rejectedLogps,
        ])
        close(read(g[0]), c.grads.chosenLogps, "d simpo / d chosen tokens")
        close(read(g[1]), c.grads.rejectedLogps, "d simpo / d rejected tokens")
      })
    })
  }
  for (const c of fixture.orpo) {
    it(`ORPO λ=${c.config.beta}`, () => {
      tf.tidy(() => {
        const inp = { chosenLogps: t2(c.input.chosenLogps), chosenMask: t2(c.input.chosenMask), rejectedLogps: t2(c.input.rejectedLogps), rejectedMask: t2(c.input.rejectedMask) }
        checkOutput("orpo", orpoLoss(inp, c.config), c)
        const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => orpoLoss({ ...inp, chosenLogps: a as tf.Tensor2D, rejectedLogps: b as tf.Tensor2D }, c.config).loss)([
          inp.chosenLogps,
          inp.rejectedLogps,
        ])
        close(read(g[0]), c.grads.chosenLogps, "d orpo / d chosen tokens")
        close(read(g[1]), c.grads.rejectedLogps, "d orpo / d rejected tokens")
      })
    })
  }

  it("by hand: ORPO with p_w = p_l = ½ has log-odds 0, loss = NLL + λ·log 2", () => {
    tf.tidy(() => {
      const lp = t2([[Math.log(0.5)]])
      const m = t2([[1]])
      const out = orpoLoss({ chosenLogps: lp, chosenMask: m, rejectedLogps: lp, rejectedMask: m }, { beta: 0.1 })
      expect(out.metrics["log_odds_chosen"].dataSync()[0]).toBeCloseTo(0, 6)
      expect(out.loss.dataSync()[0]).toBeCloseTo(Math.log(2) + 0.1 * Math.log(2), 6)
    })
  })
})

describe("KTO matches PyTorch", () => {
  for (const c of fixture.kto) {
    it(`${c.config.lossType} β=${c.config.beta} w=${c.config.desirableWeight}/${c.config.undesirableWeight}`, () => {
      tf.tidy(() => {
        const inp = {
          policyLogps: t1(c.input.policyLogps),
          refLogps: t1(c.input.refLogps),
          labels: t1(c.input.labels),
          policyKLLogps: t1(c.input.policyKLLogps),
          refKLLogps: t1(c.input.refKLLogps),
        }
        checkOutput("kto", ktoLoss(inp, c.config), c)
        const g = tf.grad((p: tf.Tensor) => ktoLoss({ ...inp, policyLogps: p as tf.Tensor1D }, c.config).loss)(inp.policyLogps)
        close(read(g), c.grads.policyLogps, "d kto / d policy logps")
      })
    })
  }

  it("by hand: r = z gives 1 − σ(0) = ½ for every example; the KL pairs rotate completions by one", () => {
    tf.tidy(() => {
      const out = ktoLoss(
        { policyLogps: t1([-2, -4]), refLogps: t1([-3, -5]), labels: t1([1, 0]), policyKLLogps: t1([-1, -1]), refKLLogps: t1([-2, -2]) },
        ktoConfig(),
      )
      expect(out.metrics["kl"].dataSync()[0]).toBeCloseTo(1, 6)
      expect(out.loss.dataSync()[0]).toBeCloseTo(0.5, 6)
    })
    expect(klMismatchIndices(4)).toEqual([3, 0, 1, 2])
  })
})

describe("GRPO matches PyTorch", () => {
  for (const c of fixture.grpo.advantages) {
    it(`group advantages (scaleRewards=${c.scaleRewards})`, () => {
      tf.tidy(() => {
        const out = groupAdvantages(t1(c.rewards), c.numGenerations, c.scaleRewards)
        close(read(out.advantages), c.advantages, "advantages")
        for (const [k, v] of Object.entries(c.metrics as Record<string, number>)) close(read(out.metrics[k]), v, k)
      })
    })
  }
  for (const c of fixture.grpo.loss) {
    it(`${c.config.lossType} β=${c.config.beta} ε=${c.config.epsilon}/${c.config.epsilonHigh} old=${c.input.oldLogps !== null}`, () => {
      tf.tidy(() => {
        const inp = {
          logps: t2(c.input.logps),
          oldLogps: c.input.oldLogps === null ? undefined : t2(c.input.oldLogps),
          refLogps: t2(c.input.refLogps),
          mask: t2(c.input.mask),
          advantages: t1(c.input.advantages),
        }
        checkOutput("grpo", grpoLoss(inp, c.config), c)
        const g = tf.grad((x: tf.Tensor) => grpoLoss({ ...inp, logps: x as tf.Tensor2D }, c.config).loss)(inp.logps)
        close(read(g), c.grads.logps, "d grpo / d logps")
      })
    })
  }

  it("by hand: rewards [1,0,0,1] → advantages ±1/(std+1e-4) with std = 0.57735", () => {
    tf.tidy(() => {
      const a = groupAdvantages(t1([1, 0, 0, 1]), 4).advantages.dataSync()
      const s = Math.sqrt(1 / 3)
      expect(a[0]).toBeCloseTo(0.5 / (s + 1e-4), 5)
      expect(a[1]).toBeCloseTo(-0.5 / (s + 1e-4), 5)
    })
  })

  it("a group whose rewards are all equal gives zero advantages and counts in frac_reward_zero_std", () => {
    tf.tidy(() => {
      const out = groupAdvantages(t1([1, 1, 0, 1]), 2)
      expect(Array.from(out.advantages.dataSync().slice(0, 2))).toEqual([0, 0])
      expect(out.metrics["frac_reward_zero_std"].dataSync()[0]).toBe(0.5)
    })
    expect(() => groupAdvantages(t1([1, 2, 3]), 2)).toThrow(/groups of numGenerations=2/)
  })
})

describe("PPO matches PyTorch", () => {
  for (const c of fixture.ppo) {
    it(`${c.config.klEstimator} rewards, GAE (γ=${c.config.gamma}, λ=${c.config.lam}), clipped policy and value loss`, () => {
      tf.tidy(() => {
        const mask = t2(c.input.mask)
        const r = ppoRewards({ logps: t2(c.input.oldLogps), refLogps: t2(c.input.refLogps), mask, scores: t1(c.input.scores) }, c.config)
        close(read(r.rewards), c.rewards, "per-token rewards")
        close(read(r.kl), c.kl, "per-token kl")
        for (const [k, v] of Object.entries(c.rewardMetrics as Record<string, number>)) close(read(r.metrics[k]), v, k)
        const { advantages, returns } = gae({ rewards: r.rewards, values: t2(c.input.oldValues), mask }, c.config)
        close(read(advantages), c.advantages, "advantages")
        close(read(returns), c.returns, "returns")
        const inp = {
          logps: t2(c.input.logps),
          oldLogps: t2(c.input.oldLogps),
          advantages,
          mask,
          values: t2(c.input.values),
          oldValues: t2(c.input.oldValues),
          returns,
        }
        checkOutput("ppo", ppoLoss(inp, c.config), c)
        const g = tf.grads((lp: tf.Tensor, v: tf.Tensor) => ppoLoss({ ...inp, logps: lp as tf.Tensor2D, values: v as tf.Tensor2D }, c.config).loss)([
          inp.logps,
          inp.values,
        ])
        close(read(g[0]), c.grads.logps, "d ppo / d logps")
        close(read(g[1]), c.grads.values, "d ppo / d values")
      })
    })
  }

  it("by hand: GAE with γ = λ = 1 and zero values is the reward-to-go", () => {
    tf.tidy(() => {
      // one row, rewards [0, 0, 1], values 0 → raw advantages [1, 1, 1] = returns; whitening a constant gives 0
      const { returns, advantages } = gae({ rewards: t2([[0, 0, 1]]), values: t2([[0, 0, 0]]), mask: t2([[1, 1, 1]]) }, { gamma: 1, lam: 1 })
      expect(Array.from(returns.dataSync())).toEqual([1, 1, 1])
      expect(Array.from(advantages.dataSync()).every((a) => Math.abs(a) < 1e-3)).toBe(true)
    })
  })
})

describe("configs validate and name the wrong field", () => {
  it("fills TRL's defaults", () => {
    expect(dpoConfig()).toMatchObject({ beta: 0.1, lossType: "sigmoid", labelSmoothing: 0 })
    expect(grpoConfig()).toMatchObject({ numGenerations: 8, epsilon: 0.2, epsilonHigh: 0.2, beta: 0, lossType: "grpo", scaleRewards: true })
    expect(grpoConfig({ epsilon: 0.1 }).epsilonHigh).toBe(0.1)
    expect(ppoConfig()).toMatchObject({ klCoef: 0.05, cliprange: 0.2, cliprangeValue: 0.2, vfCoef: 0.1, gamma: 1, lam: 0.95 })
    expect(ktoConfig()).toMatchObject({ beta: 0.1, desirableWeight: 1, undesirableWeight: 1 })
    expect(orpoConfig().beta).toBe(0.1)
    expect(simpoConfig()).toMatchObject({ beta: 2, gamma: 0.5 })
  })

  const bad: Array<[string, () => unknown, RegExp]> = [
    ["negative beta", () => dpoConfig({ beta: -1 }), /DPOConfig\.beta: must be a finite number > 0, got -1/],
    ["unknown loss type", () => dpoConfig({ lossType: "kto_pair" as never }), /DPOConfig\.lossType: must be one of "sigmoid", "ipo", "hinge", "robust"/],
    ["label smoothing on hinge", () => dpoConfig({ lossType: "hinge", labelSmoothing: 0.1 }), /DPOConfig\.labelSmoothing: only applies to lossType "sigmoid" or "robust"/],
    ["label smoothing 0.5", () => dpoConfig({ lossType: "robust", labelSmoothing: 0.5 }), /DPOConfig\.labelSmoothing: must be < 0.5/],
    ["a typo", () => dpoConfig({ betta: 0.1 } as never), /DPOConfig\.betta: unknown field/],
    ["a string number", () => orpoConfig({ beta: "0.1" as never }), /ORPOConfig\.beta: must be a number/],
    ["one generation", () => grpoConfig({ numGenerations: 1 }), /GRPOConfig\.numGenerations: must be an integer ≥ 2/],
    ["epsilon ≥ 1", () => grpoConfig({ epsilon: 1.5 }), /GRPOConfig\.epsilon: must be < 1/],
    ["bad loss type", () => grpoConfig({ lossType: "dapo" as never }), /GRPOConfig\.lossType/],
    ["fractional batch", () => ktoConfig({ batchSize: 2.5 }), /KTOConfig\.batchSize: must be an integer ≥ 2/],
    ["lam > 1", () => ppoConfig({ lam: 1.5 }), /PPOConfig\.lam: must be in \[0, 1\]/],
    ["kl estimator", () => ppoConfig({ klEstimator: "k2" as never }), /PPOConfig\.klEstimator/],
    ["learning rate 0", () => simpoConfig({ learningRate: 0 }), /SimPOConfig\.learningRate: must be a finite number > 0/],
  ]
  for (const [what, make, message] of bad) {
    it(`rejects ${what}`, () => {
      expect(make).toThrow(PreferenceConfigError)
      expect(make).toThrow(message)
    })
  }

  it("preferenceConfig selects any objective by name and knows its dataset shape", () => {
    expect(preferenceConfig("ipo")).toMatchObject({ algo: "dpo", lossType: "ipo" })
    expect(preferenceConfig("kto", { beta: 0.2 })).toMatchObject({ algo: "kto", beta: 0.2 })
    expect(preferenceConfig("grpo")).toMatchObject({ algo: "grpo", numGenerations: 8 })
    expect(PREFERENCE_ALGOS.map(datasetShapeOf)).toEqual(["preference", "preference", "preference", "preference", "unpaired", "prompt", "prompt"])
    expect(() => preferenceConfig("rlhf" as never)).toThrow(/preferenceConfig\.algo: must be one of dpo, ipo, simpo, orpo, kto, grpo, ppo/)
    expect(() => preferenceConfig("ppo", { cliprange: 2 })).toThrow(/PPOConfig\.cliprange: must be < 1/)
    expect(() => grpoConfig({ rewardWeights: [1, Number.NaN] })).toThrow(/GRPOConfig\.rewardWeights: must be an array of finite numbers/)
  })

  it("grpoLoss with beta > 0 and no reference says what to pass", () => {
    tf.tidy(() => {
      const x = t2([[-1]])
      expect(() => grpoLoss({ logps: x, mask: t2([[1]]), advantages: t1([1]) }, { ...grpoConfig(), beta: 0.1 })).toThrow(/needs refLogps/)
    })
  })
})
