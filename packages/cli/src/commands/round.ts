/**
 * `moa round start|status|rollback`: preference rounds run by the coordinator (docs/coordinator.md).
 *
 *   moa round start --algo dpo --rounds 3 --experts sort=sort [--run r1] [-k 6] [--prompts 24] [--held-out 60] [--max-tokens 12] [--min-gain 0] [--hyper JSON] [--source tasks|feedback] [--plot rounds.svg]
 *   moa round status [--run r1]
 *   moa round rollback <expert> <version>
 */
import * as fs from "node:fs"
import { Args, Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { Coordinator, Store, foldEvents, isAlgo, parseExperts, pct, rollback, roundsSvg, summarize, type Algo, type RoundEvent, type RoundSummary } from "@moa/coordinator"
import { CliFailure, resolveTarget, table, withConnection } from "../common.ts"

const nats = Options.text("nats").pipe(Options.withDescription("NATS URL (default: the cluster started here, MOA_NATS_URL)"), Options.optional)
const cluster = Options.text("cluster").pipe(Options.withDescription("cluster name (default: the one started here, else moa)"), Options.optional)
const target = (n: Option.Option<string>, c: Option.Option<string>) => {
  const t = resolveTarget(Option.getOrUndefined(n), Option.getOrUndefined(c))
  return { ...t, cluster: t.cluster ?? "moa" }
}
const cliFail = (e: unknown) => new CliFailure({ message: `moa round: ${e instanceof Error ? e.message : String(e)}` })

const rowsTable = (rows: ReadonlyArray<RoundSummary>) =>
  table([
    ["round", "expert", "reward", "pairs", "before", "candidate", "promoted", "after", "note"],
    ...rows.map((r) => [
      String(r.round),
      r.expert,
      r.rewardMean?.toFixed(3) ?? "-",
      String(r.pairs ?? "-"),
      r.accBefore !== undefined ? pct(r.accBefore) : "-",
      r.accCandidate !== undefined ? `${pct(r.accCandidate)} ${r.version}` : "-",
      r.promoted === undefined ? "-" : r.promoted ? "yes" : "no",
      r.accAfter !== undefined ? pct(r.accAfter) : "-",
      r.failure ?? "",
    ]),
  ])

const progressLine = (e: RoundEvent): string => {
  const d = e.data as Record<string, any>
  const what =
    e.step === "baseline" ? `held-out ${pct(d.accuracy)} (${d.version})`
    : e.step === "samples" ? `${d.prompts} ${d.source === "feedback" ? "feedback " : ""}prompts × ${d.k}: reward ${Number(d.rewardMean).toFixed(3)}, ${d.examples} ${d.algorithm} examples`
    : e.step === "trained" ? `trained ${d.version} from ${d.baseVersion}: ${d.steps} steps, loss ${Number(d.lossFirst).toFixed(3)} → ${Number(d.lossLast).toFixed(3)}`
    : e.step === "evaluated" ? `candidate ${d.version}: held-out ${pct(d.accuracy)}`
    : e.step === "decided" ? `${d.promote ? "promoted" : "kept current"}: ${d.reason}`
    : d.reason ? String(d.reason)
    : ""
  return `round ${e.round} ${e.expert === "_" ? "" : `${e.expert} `}${e.step}${what ? `: ${what}` : ""}`
}

const start = Command.make(
  "start",
  {
    algo: Options.text("algo").pipe(Options.withDescription("dpo|ipo|simpo|orpo|kto|ppo|grpo"), Options.withDefault("dpo")),
    rounds: Options.integer("rounds").pipe(Options.withDefault(1)),
    experts: Options.text("experts").pipe(Options.withDescription("name[=task][@adapter],… (task: a skill such as sort, sort:full, or rev)")),
    run: Options.text("run").pipe(Options.withDescription("run id; an unfinished run with this id is resumed"), Options.optional),
    k: Options.integer("k").pipe(Options.withDescription("candidates per prompt"), Options.withDefault(6)),
    prompts: Options.integer("prompts").pipe(Options.withDescription("training prompts per round and expert"), Options.withDefault(24)),
    heldOut: Options.integer("held-out").pipe(Options.withDescription("held-out prompts per evaluation"), Options.withDefault(60)),
    hyper: Options.text("hyper").pipe(Options.withDescription("training hyper-parameters as JSON, e.g. {\"learningRate\":0.002,\"maxSteps\":20}"), Options.optional),
    maxTokens: Options.integer("max-tokens").pipe(Options.withDescription("tokens an answer may take (default 12; the skills cluster's count and capital need 28)"), Options.optional),
    minGain: Options.float("min-gain").pipe(Options.withDescription("promote only above the served version's held-out accuracy + this (e.g. 0.005 = half a point; default 0)"), Options.optional),
    source: Options.choice("source", ["tasks", "feedback"]).pipe(
      Options.withDescription("training prompts: the experts' task sets, or feedback = the questions, ratings and better answers users gave in moa console"),
      Options.withDefault("tasks" as const),
    ),
    plot: Options.text("plot").pipe(Options.withDescription("SVG of reward and accuracy per round (default rounds-<run>.svg)"), Options.optional),
    nats,
    cluster,
  },
  (o) =>
    Effect.gen(function* () {
      if (!isAlgo(o.algo)) return yield* Effect.fail(new CliFailure({ message: `moa round start: --algo ${o.algo} is not one of dpo, ipo, simpo, orpo, kto, ppo, grpo` }))
      if (Option.isSome(o.maxTokens) && !(o.maxTokens.value > 0 && o.maxTokens.value <= 4096))
        return yield* Effect.fail(new CliFailure({ message: `moa round start: --max-tokens ${o.maxTokens.value} must be between 1 and 4096` }))
      if (Option.isSome(o.minGain) && !(o.minGain.value >= 0 && o.minGain.value < 1))
        return yield* Effect.fail(new CliFailure({ message: `moa round start: --min-gain ${o.minGain.value} must be a fraction in [0, 1), e.g. 0.005 for half a point` }))
      const experts = yield* Effect.try({ try: () => parseExperts(o.experts), catch: cliFail })
      const hyper = yield* Effect.try({ try: () => (Option.isSome(o.hyper) ? (JSON.parse(o.hyper.value) as Record<string, unknown>) : undefined), catch: (e) => cliFail(`--hyper is not valid JSON: ${(e as Error).message}`) })
      const run = Option.getOrElse(o.run, () => `${o.algo}-${new Date().toISOString().replace(/[-:T.Z]/g, "").slice(0, 14)}`)
      const t = target(o.nats, o.cluster)
      yield* withConnection(t, (nc) =>
        Effect.tryPromise({
          try: async () => {
            process.stdout.write(`run ${run}: ${o.algo}, ${o.rounds} round(s), experts ${experts.map((e) => e.name).join(", ")} (cluster ${t.cluster}, ${t.natsUrl})\n`)
            const c = await Coordinator.open(nc, {
              cluster: t.cluster,
              run,
              algo: o.algo as Algo,
              rounds: o.rounds,
              experts,
              k: o.k,
              prompts: o.prompts,
              heldOut: o.heldOut,
              hyper,
              ...(Option.isSome(o.maxTokens) ? { maxTokens: o.maxTokens.value } : {}),
              ...(Option.isSome(o.minGain) ? { minGain: o.minGain.value } : {}),
              promptSource: o.source,
              onEvent: (e) => process.stdout.write(`${progressLine(e)}\n`),
            })
            if (c.state.log.length > 0) process.stdout.write(`resuming: ${c.state.log.length} steps already recorded\n`)
            const state = await c.run()
            const rows = summarize(state)
            process.stdout.write(`\n${rowsTable(rows)}\n`)
            const file = Option.getOrElse(o.plot, () => `rounds-${run}.svg`)
            fs.writeFileSync(file, roundsSvg(rows, `${o.algo} run ${run}`))
            process.stdout.write(`plot: ${file}\n`)
          },
          catch: cliFail,
        }),
      )
    }),
).pipe(Command.withDescription("run (or resume) preference rounds over the experts"))

const status = Command.make("status", { run: Options.text("run").pipe(Options.optional), nats, cluster }, (o) =>
  Effect.gen(function* () {
    const t = target(o.nats, o.cluster)
    yield* withConnection(t, (nc) =>
      Effect.tryPromise({
        try: async () => {
          const store = await Store.open(nc, t.cluster)
          const events = await store.events(Option.getOrUndefined(o.run))
          const runs = [...new Set(events.filter((e) => e.run !== "admin").map((e) => e.run))]
          if (runs.length === 0) process.stdout.write(`no rounds recorded in cluster ${t.cluster}; start one with \`moa round start\`\n`)
          for (const run of runs) {
            const st = foldEvents(events.filter((e) => e.run === run))
            const started = st.log.find((e) => e.step === "run-started")?.data as { algo?: string; rounds?: number } | undefined
            const done = st.log.filter((e) => e.step === "round-done").length
            process.stdout.write(`run ${run}: ${started?.algo ?? "?"}, ${done}/${started?.rounds ?? "?"} rounds done\n${rowsTable(summarize(st))}\n\n`)
          }
          const reg = await store.registryAll()
          if (reg.length > 0)
            process.stdout.write(`${table([["expert", "adapter", "current", "history"], ...reg.map((r) => [r.expert, r.adapter, r.current, r.history.map((h) => `${h.action} ${h.version}`).join(", ")])])}\n`)
        },
        catch: cliFail,
      }),
    )
  }),
).pipe(Command.withDescription("rounds recorded in the round-events stream and the adapter registry"))

const rollbackCmd = Command.make("rollback", { expert: Args.text({ name: "expert" }), version: Args.text({ name: "version" }), nats, cluster }, (o) =>
  Effect.gen(function* () {
    const t = target(o.nats, o.cluster)
    yield* withConnection(t, (nc) =>
      Effect.tryPromise({
        try: async () => {
          const r = await rollback(nc, t.cluster, o.expert, o.version)
          process.stdout.write(`${o.expert} now serves ${r.adapter}@${r.current}\n`)
        },
        catch: cliFail,
      }),
    )
  }),
).pipe(Command.withDescription("make an expert serve an earlier adapter version (or base)"))

export const roundCommand = Command.make("round").pipe(
  Command.withDescription("preference-optimization rounds (coordinator)"),
  Command.withSubcommands([start, status, rollbackCmd]),
)
