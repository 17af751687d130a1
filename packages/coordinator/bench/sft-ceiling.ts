/**
 * How far plain supervised training still moves a cluster expert: N more SFT steps on fresh
 * right answers (questions of the training split), starting from a version of its adapter,
 * then the held-out accuracy of the result on the coordinator's two held-out sets. When N
 * steps of right answers barely move an expert, preference rounds (which learn from fewer,
 * noisier signals) have little to work with: the model is at its capacity for the skill.
 *
 *   npx tsx packages/coordinator/bench/sft-ceiling.ts --nats URL --cluster skills --expert sort --from ext --steps 1500 --lr 0.0005
 */
import { connect } from "@nats-io/transport-node"
import { generate, isSkill } from "@moa/skills"
import { Coordinator, mapLimited, plainSkillTasks, pct } from "../src/index.ts"

const arg = (n: string, d: string) => {
  const i = process.argv.indexOf(`--${n}`)
  return i >= 0 ? process.argv[i + 1]! : d
}
const expert = arg("expert", "sort")
if (!isSkill(expert)) throw new Error(`--expert ${expert}: expected a skill of @moa/skills`)
const from = arg("from", "ext")
const steps = Number(arg("steps", "1500"))
const lr = Number(arg("lr", "0.0005"))
const n = Number(arg("examples", "12000")) // ~40 bytes each: 12,000 stay under NATS's 1 MB message limit
const heldOut = Number(arg("held-out", "1000"))
if (!(Number.isInteger(steps) && steps > 0 && lr > 0 && Number.isInteger(n) && n > 0)) throw new Error("--steps, --examples: positive integers; --lr: a positive number")

const nc = await connect({ servers: arg("nats", process.env.MOA_NATS_URL ?? "nats://127.0.0.1:4222") })
try {
  const spec = { name: expert, tasks: plainSkillTasks(expert) }
  const c = await Coordinator.open(nc, { cluster: arg("cluster", "skills"), run: `sft-ceiling-${Date.now()}`, algo: "dpo", rounds: 1, experts: [spec], heldOut, maxTokens: 32 })
  // the starting version on both held-out sets (the sets c.evaluate uses): its accuracy on each,
  // and where it is wrong, by answer length
  const sets = [spec.tasks.tasks("test", heldOut, 1000), spec.tasks.tasks("test", heldOut, 2000)]
  const tasks = sets.flat()
  const outs = await mapLimited(tasks, 48, (t) => c.client.call<{ text: string }>(expert, "generate", { prompt: t.prompt, temperature: 0, maxTokens: 32, ...(from === "base" ? {} : { adapter: `${expert}@${from}` }) }))
  const right = tasks.map((t, i) => spec.tasks.verify(t, outs[i]!.text) === 1)
  const before = [right.slice(0, sets[0]!.length), right.slice(sets[0]!.length)].map((r) => r.filter(Boolean).length / r.length)
  const byLen = new Map<number, { wrong: number; n: number }>()
  tasks.forEach((t, i) => {
    const L = [...(t.reference ?? "")].length
    const b = byLen.get(L) ?? { wrong: 0, n: 0 }
    b.n++
    if (!right[i]) b.wrong++
    byLen.set(L, b)
  })
  const lengths = [...byLen.keys()].sort((x, y) => x - y)
  const data = generate(expert, { n, seed: 77, split: "train" }).map((e) => ({ prompt: e.question, completion: e.answer }))
  const t0 = Date.now()
  const r = await c.client.call<{ version: string; losses: number[] }>(
    expert,
    "train",
    { adapter: expert, baseVersion: from, algorithm: "sft", data, hyper: { lr, steps, batchSize: 64 }, promote: false },
    { timeoutMs: 3_600_000 },
  )
  const after = [await c.evaluate(spec, r.version), await c.evaluate(spec, r.version, { seed: 2000 })]
  const line = (v: string, acc: number[]) => `| ${expert}@${v} | ${pct(acc[0]!)} | ${pct(acc[1]!)} | ${pct((acc[0]! + acc[1]!) / 2)} |`
  process.stdout.write(
    [
      `${steps} more SFT steps (batch 64, lr ${lr}, ${n} fresh training questions) from ${expert}@${from}: loss ${r.losses[0]!.toFixed(4)} → ${r.losses.at(-1)!.toFixed(4)} in ${((Date.now() - t0) / 1000).toFixed(0)} s`,
      `| version | held-out (seed 1000, ${heldOut}) | second set (seed 2000, ${heldOut}) | mean |`,
      `|---|---|---|---|`,
      line(from, before),
      line(r.version, after),
      "",
      `${expert}@${from} wrong, by answer length (both held-out sets):`,
      `| length | ${lengths.join(" | ")} |`,
      `|---|${lengths.map(() => "---|").join("")}`,
      `| wrong | ${lengths.map((L) => pct(byLen.get(L)!.wrong / byLen.get(L)!.n)).join(" | ")} |`,
      `| questions | ${lengths.map((L) => byLen.get(L)!.n).join(" | ")} |`,
    ].join("\n") + "\n",
  )
} finally {
  await nc.close()
}
