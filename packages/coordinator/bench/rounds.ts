/**
 * Results for docs/coordinator.md: a real nats-server, the weak sort expert as a real process,
 * N preference rounds of one algorithm through the Coordinator, then the table of held-out
 * accuracy before/after each round, the spread between two evaluations of the same adapter
 * (the same 200 held-out prompts twice, and two disjoint held-out sets), and an SVG plot.
 *
 *   npx tsx packages/coordinator/bench/rounds.ts --algo dpo --rounds 3 [--lr 0.002] [--steps 20] [--out dir]
 *
 * Or against a running cluster whose experts speak plain questions (the skills cluster of
 * examples/skills, started with `moa up examples/skills/cluster.ts`): its own expert process
 * trains and serves, the tasks are `plainSkillTasks(expert)`, and the spread is measured on the
 * same held-out set twice and on a second held-out set of the same size:
 *
 *   npx tsx packages/coordinator/bench/rounds.ts --nats nats://127.0.0.1:4222 --cluster skills --expert count --algo dpo --rounds 3
 *
 * On a cluster, `--from VERSION` first makes the expert serve that version of its adapter (e.g.
 * `ext`, the adapter it was started with), so runs start from the same place; `--start sft:N`
 * instead trains a fresh LoRA adapter (r 16 on every matrix) for N SFT steps through the
 * expert's own `train` verb and starts from it: an expert that was deployed after a short
 * training, with room to improve. Each served version is also scored on a second held-out set
 * (seed 2000), which the promotion decisions never saw.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { connect } from "@nats-io/transport-node"
import { startNatsServer } from "@moa/bus/testing"
import { Coordinator, defaultHyper, isAlgo, rollback, roundsSvg, skillTasks, plainSkillTasks, summarize, pct } from "../src/index.ts"
import { generate, isSkill } from "@moa/skills"
import { startExpert, weakModel } from "../test/helpers.ts"

const arg = (n: string, d: string) => {
  const i = process.argv.indexOf(`--${n}`)
  return i >= 0 ? process.argv[i + 1]! : d
}
const algo = arg("algo", "dpo")
if (!isAlgo(algo)) throw new Error(`--algo ${algo}: expected dpo, ipo, simpo, orpo, kto, ppo or grpo`)
const rounds = Number(arg("rounds", "3"))
const out = arg("out", path.resolve("packages/coordinator/bench/results"))
const hyper: Record<string, unknown> = { learningRate: Number(arg("lr", algo === "grpo" ? "0.005" : "0.002")), maxSteps: Number(arg("steps", "20")) }
if (arg("beta", "")) hyper.beta = Number(arg("beta", ""))
if (arg("batch", "")) hyper.batchSize = Number(arg("batch", ""))
// any other field of the algorithm's config, e.g. --hyper '{"rpoAlpha":1}'
if (arg("hyper", "")) Object.assign(hyper, JSON.parse(arg("hyper", "")))

/** A running cluster (--nats): its expert --expert, plain tasks; else a nats-server and the weak CI sort expert of our own. */
const external = arg("nats", "")
const expertName = arg("expert", "sort")
if (external && !isSkill(expertName)) throw new Error(`--expert ${expertName}: expected a skill of @moa/skills`)
const cluster = external ? arg("cluster", "skills") : "bench"
const work = fs.mkdtempSync(path.join(os.tmpdir(), "moa-coord-bench-"))
const nats = external ? undefined : await startNatsServer({ jetstream: true })
const expert = nats ? await startExpert({ model: await weakModel(), name: "sort", cluster: "bench", nats: nats.url, artifacts: path.join(work, "sort") }) : undefined
const nc = await connect({ servers: external || nats!.url })
const t0 = Date.now()
try {
  const spec = external && isSkill(expertName) ? { name: expertName, tasks: plainSkillTasks(expertName) } : { name: "sort", tasks: skillTasks("sort") }
  // where the run starts (cluster only): a given version, or a freshly SFT-trained adapter
  const from = arg("from", "")
  const start = arg("start", "")
  const serve = (version: string) => rollback(nc, cluster, spec.name, version, { register: { adapter: spec.name } })
  const c = await Coordinator.open(nc, {
    cluster,
    run: `${algo}-${Date.now()}`,
    algo,
    rounds,
    experts: [spec],
    prompts: Number(arg("prompts", "24")),
    k: Number(arg("k", "6")),
    heldOut: Number(arg("held-out", "200")),
    hyper,
    temperature: Number(arg("temperature", "0.8")),
    // a cluster's experts may write more than their answer inside (count's scratchpad, capital's longest 27 characters)
    maxTokens: Number(arg("max-tokens", external ? "32" : "12")),
    onEvent: (e) => process.stderr.write(`${((Date.now() - t0) / 1000).toFixed(0)}s round ${e.round} ${e.expert} ${e.step} ${JSON.stringify(e.data).slice(0, 160)}\n`),
  })
  let startInfo = ""
  if (external && start) {
    const m = /^sft:(\d+)$/.exec(start)
    if (!m || !isSkill(expertName)) throw new Error(`--start ${start}: expected sft:STEPS, e.g. sft:300`)
    const steps = Number(m[1])
    const data = generate(expertName, { n: 10_000, seed: 5, split: "train" }).map((e) => ({ prompt: e.question, completion: e.answer }))
    const r = await c.client.call<{ version: string; losses: number[] }>(
      spec.name,
      "train",
      { adapter: spec.name, baseVersion: "new", lora: { r: 16, alpha: 32, targetModules: ["all"] }, algorithm: "sft", data, hyper: { lr: 2e-3, steps, batchSize: 64, seed: 5 }, promote: false },
      { timeoutMs: 3_600_000 },
    )
    await serve(r.version)
    startInfo = `start: a fresh LoRA adapter (r 16, every matrix) after ${steps} SFT steps (batch 64, lr 2e-3) = ${spec.name}@${r.version}, loss ${r.losses[0]!.toFixed(3)} → ${r.losses.at(-1)!.toFixed(3)}`
  } else if (external && from) {
    await serve(from)
    startInfo = `start: ${spec.name}@${from}`
  }
  if (startInfo) process.stderr.write(`${startInfo}\n`)
  const startVersion = external ? await c.currentVersion(spec) : undefined
  const state = await c.run()
  const rows = summarize(state)
  // spread between two evaluations of the same adapter: the served version on the same prompts twice, and on two disjoint held-out sets
  const served = (await c.currentVersion(spec)) as string
  const a = await c.evaluate(spec, served)
  const b = await c.evaluate(spec, served)
  // and on the two halves of the held-out set (the sampling noise of a set of this size); on a
  // cluster, a second held-out set of the full size instead (another seed)
  const all = spec.tasks.tasks("test", c.opts.heldOut ?? 200, 1000)
  const half = async (tasks: typeof all) => {
    const outs = await Promise.all(tasks.map((t) => c.client.call("sort", "generate", { prompt: t.prompt, temperature: 0, maxTokens: 12, ...(served === "base" ? {} : { adapter: `sort@${served}` }) }, { timeoutMs: 120_000 })))
    return tasks.filter((t, i) => spec.tasks.verify(t, outs[i]!.text) === 1).length / tasks.length
  }
  const h1 = external ? a : await half(all.filter((_, i) => i % 2 === 0))
  // on a cluster: every served version on a second held-out set the promotion never saw
  const second = new Map<string, number>()
  const secondOf = async (v: string) => {
    if (!second.has(v)) second.set(v, await c.evaluate(spec, v, { seed: 2000 }))
    return second.get(v)!
  }
  const h2 = external ? await secondOf(served) : await half(all.filter((_, i) => i % 2 === 1))
  const servedAfter: string[] = []
  if (external) {
    let v = startVersion!
    await secondOf(v)
    for (const r of rows) {
      if (r.promoted && r.version) v = r.version
      servedAfter.push(v)
      await secondOf(v)
    }
  }
  const lines = [
    `algo ${algo}, ${rounds} rounds, hyper ${JSON.stringify(hyper)} over the defaults ${JSON.stringify(defaultHyper(algo, 1000))}, ${c.opts.prompts} prompts × ${c.opts.k} samples per round, ${c.opts.heldOut} held-out prompts, ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    ...(startInfo ? [startInfo] : []),
    `| round | sample reward | pairs/groups | held-out before | candidate | promoted | held-out after |${external ? " second set after |" : ""}`,
    `|---|---|---|---|---|---|---|${external ? "---|" : ""}`,
    ...(external ? [`| 0 | | | | | | ${pct(rows[0]?.accBefore ?? NaN)} | ${pct(second.get(startVersion!)!)} |`] : []),
    ...rows.map((r, i) => `| ${r.round} | ${r.rewardMean?.toFixed(3) ?? "-"} | ${r.pairs ?? "-"} | ${r.accBefore !== undefined ? pct(r.accBefore) : "-"} | ${r.accCandidate !== undefined ? `${pct(r.accCandidate)} (${r.version})` : "-"} | ${r.promoted ?? "-"} | ${r.accAfter !== undefined ? pct(r.accAfter) : "-"} |${external ? ` ${pct(second.get(servedAfter[i]!)!)} |` : ""}`),
    `served ${served}: same held-out prompts twice ${pct(a)} / ${pct(b)} (spread ${pct(Math.abs(a - b))}); ${external ? `a second held-out set of ${all.length}` : `its two halves (${all.length} held-out prompts in all)`}: ${pct(h1)} / ${pct(h2)} (spread ${pct(Math.abs(h1 - h2))})`,
  ]
  process.stdout.write(`${lines.join("\n")}\n`)
  fs.mkdirSync(out, { recursive: true })
  const stem = external ? `${cluster}-${spec.name}-${arg("tag", "") || algo}` : algo
  fs.writeFileSync(path.join(out, `${stem}.md`), `${lines.join("\n")}\n`)
  fs.writeFileSync(path.join(out, `${stem}.svg`), roundsSvg(rows, `${algo}: held-out accuracy and sample reward per round (${external ? `${cluster} cluster's ${spec.name} expert` : "weak sort expert"})`))
  fs.writeFileSync(path.join(out, `${stem}.json`), JSON.stringify({ algo, hyper, cluster, expert: spec.name, start: startInfo || undefined, rows, second: external ? { seed: 2000, start: second.get(startVersion!), after: servedAfter.map((v) => ({ version: v, accuracy: second.get(v) })) } : undefined, spread: { same: [a, b], disjoint: [h1, h2] } }, null, 2))
} finally {
  await nc.close()
  await expert?.stop()
  await nats?.stop()
  fs.rmSync(work, { recursive: true, force: true })
}
process.exit(0)
