/**
 * `moa router …`: train and store the gate, ask the router, show the stored gate.
 *
 *   moa router train [--cluster c] [--nats url] [--n-train 40] [--n-held-out 40] [--epochs 30]
 *                    [--hidden 0] [-k 1] [--threshold 0] [--fallback base] [--lb-coef 0.01]
 *                    [--version v3] [--out dir] [--no-publish] [--json]
 *   moa router ask "add 2 3" [--mode moe|moa|self-moa|single] [--expert e] [--proposers a,b,c]
 *                    [--layers 1] [--samples 5] [--aggregator vote|best-of-n:judge:<expert>|model:<expert>] [--json]
 *   moa router gate  — the current gate version, its experts and training metrics
 */
import { Args, Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { askRouter, gateFiles, loadGate, trainRouter, type AggregatorSpec, type RouteMode, type RouteRequest } from "@moa/router"
import { CliFailure, resolveTarget, withConnection } from "../common.ts"

const common = {
  nats: Options.text("nats").pipe(Options.withDescription("NATS URL (default: MOA_NATS_URL or the cluster started here)"), Options.optional),
  cluster: Options.text("cluster").pipe(Options.withDescription("cluster name"), Options.optional),
  json: Options.boolean("json").pipe(Options.withDescription("print JSON")),
}

const targetOf = (nats: Option.Option<string>, cluster: Option.Option<string>) => {
  const t = resolveTarget(Option.getOrUndefined(nats), Option.getOrUndefined(cluster))
  if (!t.cluster) return Effect.fail(new CliFailure({ message: "which cluster? pass --cluster <name> (or start one here with `moa up`)" }))
  return Effect.succeed({ ...t, cluster: t.cluster })
}

const attempt = <A>(what: string, f: () => Promise<A>) => Effect.tryPromise({ try: f, catch: (e) => new CliFailure({ message: `moa router ${what}: ${(e as Error)?.message ?? String(e)}` }) })

const train = Command.make(
  "train",
  {
    ...common,
    nTrain: Options.integer("n-train").pipe(Options.withDescription("training questions per skill"), Options.withDefault(40)),
    nHeldOut: Options.integer("n-held-out").pipe(Options.withDescription("held-out questions per skill"), Options.withDefault(40)),
    epochs: Options.integer("epochs").pipe(Options.withDefault(30)),
    hidden: Options.integer("hidden").pipe(Options.withDescription("0 = linear gate, else one hidden layer of this width"), Options.withDefault(0)),
    k: Options.integer("k").pipe(Options.withDescription("experts a moe request asks"), Options.withDefault(1)),
    threshold: Options.float("threshold").pipe(Options.withDescription("confidence below which the fallback applies"), Options.withDefault(0)),
    fallback: Options.text("fallback").pipe(Options.withDescription("expert for low-confidence questions (default: widen k)"), Options.optional),
    lbCoef: Options.float("lb-coef").pipe(Options.withDescription("weight of the load-balancing loss"), Options.withDefault(0.01)),
    deadlineMs: Options.integer("deadline-ms").pipe(Options.withDefault(30_000)),
    version: Options.text("version").pipe(Options.optional),
    out: Options.directory("out").pipe(Options.withDescription("also write gate.safetensors + gate.json here"), Options.optional),
    noPublish: Options.boolean("no-publish").pipe(Options.withDescription("do not store the gate in the cluster")),
  },
  (o) =>
    Effect.gen(function* () {
      const t = yield* targetOf(o.nats, o.cluster)
      yield* withConnection(t, (nc) =>
        Effect.gen(function* () {
          const log = (line: string) => (o.json ? undefined : process.stdout.write(`${line}\n`))
          const r = yield* attempt("train", () =>
            trainRouter(nc, {
              cluster: t.cluster,
              nTrain: o.nTrain,
              nHeldOut: o.nHeldOut,
              epochs: o.epochs,
              lbCoef: o.lbCoef,
              deadlineMs: o.deadlineMs,
              gate: { hidden: o.hidden, k: o.k, threshold: o.threshold, fallback: Option.getOrNull(o.fallback) },
              version: Option.getOrUndefined(o.version),
              publish: !o.noPublish,
              log,
            }),
          )
          if (Option.isSome(o.out)) {
            const f = gateFiles(r.gate, r.pointer?.version ?? Option.getOrElse(o.version, () => "local"))
            mkdirSync(o.out.value, { recursive: true })
            writeFileSync(join(o.out.value, "gate.safetensors"), f.weights)
            writeFileSync(join(o.out.value, "gate.json"), f.config)
            log(`wrote ${join(o.out.value, "gate.safetensors")} and gate.json`)
          }
          if (o.json) process.stdout.write(`${JSON.stringify({ version: r.pointer?.version, report: r.report, expertAccuracy: r.expertAccuracy }, null, 2)}\n`)
          else {
            log("routing per skill (top-1): " + Object.entries(r.report.perSkill).map(([s, v]) => `${s} ${(100 * v.top1).toFixed(1)}%`).join(", "))
            log("load (share of top-1): " + Object.entries(r.report.load).map(([e, v]) => `${e} ${(100 * v).toFixed(0)}%`).join(", "))
          }
          r.gate.dispose()
        }),
      )
    }),
).pipe(Command.withDescription("ask the experts a labelled prompt set, fit the gate on who answered best, store it as a new version"))

const parseAggregator = (s: string): Effect.Effect<AggregatorSpec, CliFailure> => {
  if (s === "vote") return Effect.succeed({ kind: "vote" })
  if (s.startsWith("best-of-n:")) return Effect.succeed({ kind: "best-of-n", scorer: s.slice(10) })
  if (s.startsWith("model:")) return Effect.succeed({ kind: "model", expert: s.slice(6) })
  return Effect.fail(new CliFailure({ message: `--aggregator must be vote, best-of-n:judge:<expert> or model:<expert>, got "${s}"` }))
}

const ask = Command.make(
  "ask",
  {
    ...common,
    prompt: Args.text({ name: "prompt" }),
    mode: Options.choice("mode", ["single", "moe", "moa", "self-moa"]).pipe(Options.optional),
    expert: Options.text("expert").pipe(Options.optional),
    proposers: Options.text("proposers").pipe(Options.withDescription("comma-separated experts for moa"), Options.optional),
    k: Options.integer("k").pipe(Options.optional),
    layers: Options.integer("layers").pipe(Options.optional),
    samples: Options.integer("samples").pipe(Options.optional),
    aggregator: Options.text("aggregator").pipe(Options.optional),
    deadlineMs: Options.integer("deadline-ms").pipe(Options.optional),
  },
  (o) =>
    Effect.gen(function* () {
      const t = yield* targetOf(o.nats, o.cluster)
      const aggregator = Option.isSome(o.aggregator) ? yield* parseAggregator(o.aggregator.value) : undefined
      const req: RouteRequest = {
        prompt: o.prompt,
        mode: Option.getOrUndefined(o.mode) as RouteMode | undefined,
        expert: Option.getOrUndefined(o.expert),
        proposers: Option.getOrUndefined(o.proposers)?.split(",").filter(Boolean),
        k: Option.getOrUndefined(o.k),
        layers: Option.getOrUndefined(o.layers),
        samples: Option.getOrUndefined(o.samples),
        aggregator,
        deadlineMs: Option.getOrUndefined(o.deadlineMs),
      }
      yield* withConnection(t, (nc) =>
        Effect.gen(function* () {
          const r = yield* attempt("ask", () => askRouter(nc, t.cluster, req))
          if (o.json) {
            process.stdout.write(`${JSON.stringify(r, null, 2)}\n`)
            return
          }
          process.stdout.write(`${r.answer}\n`)
          const tr = r.trace
          const g = tr.gate ? `gate ${tr.gate.version}: ${tr.gate.chosen.join(", ")} (confidence ${tr.gate.confidence.toFixed(2)}, ${tr.gate.rule}); ` : ""
          const layers = tr.layers
            .map((l) => `layer ${l.index}: ` + l.candidates.map((c) => (c.ok ? `${c.expert}=${JSON.stringify(c.text)} ${c.latencyMs.toFixed(0)}ms` : `${c.expert} dropped (${c.dropped})`)).join(", "))
            .join("; ")
          process.stderr.write(`[${tr.mode}] ${g}${layers}; ${tr.aggregator.kind} → ${JSON.stringify(tr.aggregator.answer)}; ${tr.totalLatencyMs.toFixed(0)} ms\n`)
        }),
      )
    }),
).pipe(Command.withDescription("ask the router agent a question; prints the answer (trace on stderr, or all as --json)"))

const gate = Command.make("gate", { ...common }, (o) =>
  Effect.gen(function* () {
    const t = yield* targetOf(o.nats, o.cluster)
    yield* withConnection(t, (nc) =>
      Effect.gen(function* () {
        const b = yield* attempt("gate", () => loadGate(nc, t.cluster))
        if (!b) {
          process.stdout.write(`no gate stored for cluster ${t.cluster} yet: run \`moa router train --cluster ${t.cluster}\`\n`)
          return
        }
        const c = b.gate.config
        const info = { version: b.version, experts: c.experts, features: c.features, hidden: c.hidden, k: c.k, temperature: c.temperature, threshold: c.threshold, fallback: c.fallback }
        process.stdout.write(o.json ? `${JSON.stringify(info, null, 2)}\n` : `gate ${b.version}: experts ${c.experts.join(", ")}; ${c.features.kind} features (${c.features.dim}); hidden ${c.hidden}; k ${c.k}; threshold ${c.threshold}; fallback ${c.fallback ?? "widen k"}\n`)
        b.gate.dispose()
      }),
    )
  }),
).pipe(Command.withDescription("show the router gate stored in the cluster"))

export const routerCommand = Command.make("router").pipe(
  Command.withDescription("the router: train the gate (MoE), ask in single/moe/moa/self-moa modes, inspect the stored gate"),
  Command.withSubcommands([train, ask, gate]),
)
