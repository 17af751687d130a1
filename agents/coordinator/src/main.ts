/**
 * The coordinator as its own process: runs (or resumes) preference rounds over the experts
 * of a cluster and prints one JSON line per recorded step.
 *
 *   tsx agents/coordinator/src/main.ts --nats nats://… --cluster skills --run r1 --algo dpo
 *       --rounds 3 --experts sort=sort[,rev=rev] [--k 6] [--prompts 24] [--held-out 60]
 *       [--seed 0] [--hyper '{"learningRate":0.005}'] [--min-gain 0] [--source tasks|feedback]
 *
 * Killed mid-round and started again with the same --run, it carries on from the first step
 * not recorded in the round-events stream (docs/coordinator.md).
 */
import { Effect } from "effect"
import { isAlgo, parseExperts, runRounds, summarize } from "@moa/coordinator"
import { programArgs } from "@moa/runtime/args"

const USAGE =
  "usage: moa-coordinator --nats URL --cluster NAME --run ID --algo dpo|ipo|simpo|orpo|kto|ppo|grpo --rounds N --experts name[=task][@adapter],… " +
  "[--k 6] [--prompts 24] [--held-out 60] [--seed 0] [--hyper JSON] [--min-gain 0] [--source tasks|feedback]\n"
const { die, flag, num } = programArgs("moa-coordinator", USAGE)
const algo = flag("algo") ?? "dpo"
if (!isAlgo(algo)) die(`--algo ${algo}: expected dpo, ipo, simpo, orpo, kto, ppo or grpo`)
let hyper: Record<string, unknown> | undefined
try {
  hyper = flag("hyper") ? JSON.parse(flag("hyper")!) : undefined
} catch (e) {
  die(`--hyper is not valid JSON: ${(e as Error).message}`)
}
let experts
try {
  experts = parseExperts(flag("experts") ?? die("--experts is required"))
} catch (e) {
  die((e as Error).message)
}
const nats = flag("nats") ?? process.env.MOA_NATS_URL ?? die("--nats URL is required")
const source = flag("source") ?? "tasks"
if (source !== "tasks" && source !== "feedback") die(`--source ${source}: expected tasks (the experts' task sets) or feedback (the console's ratings)`)
const opts = {
  cluster: flag("cluster") ?? "moa",
  run: flag("run") ?? `run-${Date.now()}`,
  algo: algo as Parameters<typeof isAlgo>[0] & import("@moa/coordinator").Algo,
  rounds: num("rounds") ?? 1,
  experts: experts!,
  k: num("k"),
  prompts: num("prompts"),
  heldOut: num("held-out"),
  seed: num("seed"),
  minGain: num("min-gain"),
  hyper,
  promptSource: source as "tasks" | "feedback",
  onEvent: (e: unknown) => process.stdout.write(`${JSON.stringify(e)}\n`),
}
Effect.runPromise(runRounds(nats, opts)).then(
  (state) => {
    process.stdout.write(`${JSON.stringify({ done: true, summary: summarize(state) })}\n`)
    process.exit(0)
  },
  (e) => {
    process.stderr.write(`moa-coordinator: ${e instanceof Error ? e.message : String(e)}\n`)
    process.exit(1)
  },
)
