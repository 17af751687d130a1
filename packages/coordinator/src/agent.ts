/**
 * The coordinator as an agent of a cluster: `defineCoordinator(...)` goes into a cluster file
 * beside the experts and the router; it serves
 *
 *   round         {algo?, rounds?, experts?, run?, k?, prompts?, heldOut?} → starts a run of
 *                 preference rounds in the background and answers at once with its id
 *                 (one run at a time; a run id that exists and is unfinished resumes it)
 *   round-status  {} → whether a run is going, its id, the per-round summary so far, the last error
 *
 * The run's events go to the round-events stream (`moa.<cluster>.rounds.>`), which `moa console`'s
 * `/round watch` and `moa round status` read. The agent program is the same `agent-main` as every
 * other agent; `agents/coordinator` stays the one-shot command for scripted runs.
 */
import { Schema } from "effect"
import { defineAgent, verb, type AgentDefinition } from "@moa/runtime"
import { moaError } from "@moa/protocol"
import { ALGOS, foldEvents, summarize, type Algo, type RoundEvent, type RoundSummary } from "./logic.ts"
import { Coordinator, type ExpertSpec, type RoundOptions } from "./round.ts"

export interface CoordinatorAgentOptions {
  /** agent name (default "coordinator") */
  readonly name?: string
  /** the experts the rounds improve (a request may pick a subset by name) */
  readonly experts: ReadonlyArray<ExpertSpec>
  /** defaults for a round request */
  readonly algo?: Algo
  readonly rounds?: number
  readonly k?: number
  readonly prompts?: number
  readonly heldOut?: number
  readonly hyper?: Record<string, unknown>
  readonly minGain?: number
  readonly maxTokens?: number
  readonly trainTimeoutMs?: number
  readonly description?: string
  readonly env?: Record<string, string>
}

const Int = (lo: number, hi: number) => Schema.Int.pipe(Schema.between(lo, hi))
export const RoundRequest = Schema.Struct({
  algo: Schema.optional(Schema.Literal(...ALGOS)),
  rounds: Schema.optional(Int(1, 100)),
  experts: Schema.optional(Schema.Array(Schema.String)),
  run: Schema.optional(Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9_-]{1,64}$/, { message: () => "run ids use letters, digits, - and _ (at most 64)" }))),
  k: Schema.optional(Int(2, 64)),
  prompts: Schema.optional(Int(1, 10_000)),
  heldOut: Schema.optional(Int(1, 10_000)),
})
export const RoundStarted = Schema.Struct({
  run: Schema.String,
  algo: Schema.String,
  rounds: Schema.Int,
  experts: Schema.Array(Schema.String),
})
const Summary = Schema.Struct({
  round: Schema.Int,
  expert: Schema.String,
  rewardMean: Schema.optional(Schema.Number),
  pairs: Schema.optional(Schema.Number),
  accBefore: Schema.optional(Schema.Number),
  accCandidate: Schema.optional(Schema.Number),
  accAfter: Schema.optional(Schema.Number),
  version: Schema.optional(Schema.String),
  promoted: Schema.optional(Schema.Boolean),
  failure: Schema.optional(Schema.String),
})
export const RoundStatus = Schema.Struct({
  running: Schema.Boolean,
  run: Schema.optional(Schema.String),
  events: Schema.Int,
  summary: Schema.Array(Summary),
  error: Schema.optional(Schema.String),
})

interface State {
  current?: { run: string; promise: Promise<void>; events: RoundEvent[]; summary: RoundSummary[]; error?: string; done: boolean }
}

export const defineCoordinator = (o: CoordinatorAgentOptions): AgentDefinition<State> => {
  if (o.experts.length === 0) throw new Error("defineCoordinator: name at least one expert to improve")
  const known = new Map(o.experts.map((e) => [e.name, e]))
  return defineAgent<State>({
    name: o.name ?? "coordinator",
    role: "coordinator",
    description: o.description ?? `preference rounds (${o.algo ?? "orpo"}) over ${[...known.keys()].join(", ")}`,
    concurrency: 4,
    ...(o.env ? { env: o.env } : {}),
    setup: () => ({}),
    handlers: {
      round: verb({ request: RoundRequest, response: RoundStarted, description: "start (or resume) a run of preference rounds in the background" }, (req, ctx) => {
        const st = ctx.state
        if (st.current && !st.current.done) throw moaError("OVERLOADED", `run ${st.current.run} is still going; wait for it (round-status) or watch it (moa console: /round watch)`)
        const names = req.experts ?? [...known.keys()]
        const unknown = names.filter((n) => !known.has(n))
        if (unknown.length > 0) throw moaError("BAD_REQUEST", `unknown expert(s) ${unknown.join(", ")}: this coordinator improves ${[...known.keys()].join(", ")}`, { field: "experts" })
        if (names.length === 0) throw moaError("BAD_REQUEST", "experts is empty: name at least one", { field: "experts" })
        const run = req.run ?? `r${new Date().toISOString().replace(/[-:.TZ]/g, "").slice(0, 14)}`
        const algo = req.algo ?? o.algo ?? "orpo"
        const rounds = req.rounds ?? o.rounds ?? 1
        const cur: NonNullable<State["current"]> = { run, events: [], summary: [], done: false, promise: Promise.resolve() }
        const opts: RoundOptions = {
          cluster: ctx.cluster,
          run,
          algo,
          rounds,
          experts: names.map((n) => known.get(n)!),
          ...(req.k ?? o.k ? { k: req.k ?? o.k } : {}),
          ...(req.prompts ?? o.prompts ? { prompts: req.prompts ?? o.prompts } : {}),
          ...(req.heldOut ?? o.heldOut ? { heldOut: req.heldOut ?? o.heldOut } : {}),
          ...(o.hyper ? { hyper: o.hyper } : {}),
          ...(o.minGain !== undefined ? { minGain: o.minGain } : {}),
          ...(o.maxTokens ? { maxTokens: o.maxTokens } : {}),
          ...(o.trainTimeoutMs ? { trainTimeoutMs: o.trainTimeoutMs } : {}),
          onEvent: (e) => {
            cur.events.push(e)
            ctx.log.info({ run, round: e.round, expert: e.expert, step: e.step }, "round event")
          },
        }
        const log = ctx.log
        cur.promise = Coordinator.open(ctx.nc, opts)
          .then((c) => c.run())
          .then(
            (state) => {
              cur.summary = summarize(state)
              log.info({ run, summary: cur.summary }, "run finished")
            },
            (e: unknown) => {
              cur.error = e instanceof Error ? e.message : String(e)
              log.error({ run, err: cur.error }, "run failed")
            },
          )
          .finally(() => {
            cur.done = true
          })
        st.current = cur
        return { run, algo, rounds, experts: names }
      }),
      "round-status": verb({ request: Schema.Struct({}), response: RoundStatus, description: "the run going on (or the last one): events so far, summary, error" }, (_req, ctx) => {
        const c = ctx.state.current
        if (!c) return { running: false, events: 0, summary: [] }
        const summary = c.done ? c.summary : summarize(foldEvents(c.events))
        return { running: !c.done, run: c.run, events: c.events.length, summary: summary.map((s) => ({ ...s })), ...(c.error ? { error: c.error } : {}) }
      }),
    },
    teardown: async (st) => {
      // a SIGTERM mid-run: the events recorded so far let the same run id resume on the next start
      if (st.current && !st.current.done) st.current.error = "stopped by shutdown; start the same run id to resume"
    },
  })
}
