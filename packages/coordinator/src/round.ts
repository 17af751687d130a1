/**
 * A run of preference rounds over the experts of a cluster. Each step of a round is recorded
 * once in the round-events stream under its key (run.round.expert.step); a coordinator that
 * starts with the id of an unfinished run rebuilds its state from those events and carries on
 * from the first step not recorded, so no pair is lost or counted twice.
 *
 *   round r, per expert:  baseline (held-out accuracy of the current version)
 *                         samples  (k candidates per prompt → rewards → pairs/groups, recorded with the data)
 *                         job-queued (the training job in the work-queue stream, msg id = job id)
 *   then the job queue:   trained | job-failed | job-invalid   (the expert's `train` verb)
 *   then per expert:      evaluated (the candidate `adapter@version` on held-out prompts)
 *                         decided  (promote through `adapters-load`, registry in KV, weights in Object Store)
 */
import { Effect, Schema } from "effect"
import type { NatsConnection } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { makeClient, type AgentClient } from "@moa/runtime"
import type { MoaError } from "@moa/protocol"
import {
  agreementSource,
  decide,
  defaultHyper,
  foldEvents,
  scoreGroup,
  stepOf,
  trainingData,
  type Algo,
  type RewardError,
  type RewardSource,
  type RoundEvent,
  type RunState,
  type ScoredGroup,
  type Step,
  type Task,
} from "./logic.ts"
import { Store, type RegistryEntry } from "./store.ts"
import { feedbackSource, feedbackTasks, readFeedback } from "./feedback.ts"
import type { TaskSpec } from "./tasks.ts"

export interface ExpertSpec {
  /** agent name (subjects moa.<cluster>.<name>.<verb>) */
  readonly name: string
  /** adapter the rounds improve (default: the expert's name) */
  readonly adapter?: string
  readonly tasks: TaskSpec
}

export interface RoundOptions {
  readonly cluster: string
  /** run id: a new one starts a run, an existing unfinished one resumes it */
  readonly run: string
  readonly algo: Algo
  readonly rounds: number
  readonly experts: ReadonlyArray<ExpertSpec>
  /** training prompts per round and expert (default 24) */
  readonly prompts?: number
  /** candidates per prompt (default 6) */
  readonly k?: number
  /** held-out prompts for evaluation (default 60) */
  readonly heldOut?: number
  readonly temperature?: number
  readonly maxTokens?: number
  readonly seed?: number
  /**
   * Where training prompts come from: the experts' task sets (default), or `feedback` — the
   * questions users asked in `moa console`, rewarded by their ratings and better answers
   * (stream MOA_FEEDBACK_<cluster>, read at each round)
   */
  readonly promptSource?: "tasks" | "feedback"
  /** weight of the user ratings (default 1) */
  readonly feedbackWeight?: number
  /** with feedback prompts, also score answers with the task's verifiable reward (default false: users decide) */
  readonly feedbackVerifiable?: boolean
  /** weight of the agreement reward (0 = off, default 0) */
  readonly agreementWeight?: number
  /** more reward sources (user ratings, a judge, …); the verifiable reward of the task is always on */
  readonly rewardSources?: ReadonlyArray<RewardSource>
  /** override the training hyper-parameters sent with each job */
  readonly hyper?: Record<string, unknown>
  /** promote only when the candidate beats the current version by more than this (default 0) */
  readonly minGain?: number
  readonly trainTimeoutMs?: number
  /** how long an expert that is not answering (killed, restarting) is waited for before its job fails (default 60 s) */
  readonly expertGraceMs?: number
  /** progress notes that are not events (a lost job being re-sent, …) */
  readonly onNote?: (note: string) => void
  readonly onEvent?: (e: RoundEvent) => void
}

/** The job message on the work queue (decoded at the boundary; a message that fails it is recorded as job-invalid). */
export const TrainJob = Schema.Struct({
  jobId: Schema.String,
  run: Schema.String,
  round: Schema.Int,
  expert: Schema.String,
  adapter: Schema.String,
  baseVersion: Schema.String,
  algorithm: Schema.String,
  data: Schema.Array(Schema.Unknown),
  hyper: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
})
export type TrainJob = typeof TrainJob.Type

const reasonOf = (e: unknown): string => {
  const m = e as Partial<MoaError> & { message?: string }
  const msg = m?.message ?? String(e)
  if (/no responders|503/i.test(msg)) return `the expert is not running (no responders): ${msg}`
  return m?.code ? `${m.code}${m.field ? ` (${m.field})` : ""}: ${msg}` : msg
}

export interface AdapterList {
  adapters: { name: string; current: string; versions: string[] }[]
}

/** What a round took from the feedback stream for one expert. */
interface FeedbackUse {
  readonly items: number
  readonly lastSeq: number
  readonly invalid: { seq: number; reason: string }[]
  readonly questions: number
  readonly userPairs: { prompt: string; chosen: string; rejected: string }[]
}

/** Users' better answers join the pairs (DPO family), the labelled items (KTO) or the rollouts (PPO: reward 1 and 0); GRPO groups stay as sampled. */
function withUserPairs(td: { algorithm: string; data: unknown[] }, pairs: ReadonlyArray<{ prompt: string; chosen: string; rejected: string }>): { algorithm: string; data: unknown[] } {
  if (pairs.length === 0) return td
  if (["dpo", "ipo", "simpo", "orpo"].includes(td.algorithm)) {
    const have = new Set((td.data as { prompt: string; chosen: string; rejected: string }[]).map((p) => `${p.prompt}\u0000${p.chosen}\u0000${p.rejected}`))
    return { ...td, data: [...td.data, ...pairs.filter((p) => !have.has(`${p.prompt}\u0000${p.chosen}\u0000${p.rejected}`))] }
  }
  // KTO's labelled items and PPO's rollouts: the better answer good, the one it replaced bad
  const single = (item: (prompt: string, completion: string, good: boolean) => { prompt: string; completion: string }) => {
    const key = (x: { prompt: string; completion: string }) => `${x.prompt}\u0000${x.completion}`
    const have = new Set((td.data as { prompt: string; completion: string }[]).map(key))
    const extra = pairs
      .flatMap((p) => [item(p.prompt, p.chosen, true), item(p.prompt, p.rejected, false)])
      .filter((x) => !have.has(key(x)) && (have.add(key(x)), true))
    return { ...td, data: [...td.data, ...extra] }
  }
  if (td.algorithm === "kto") return single((prompt, completion, good) => ({ prompt, completion, label: good }))
  if (td.algorithm === "ppo") return single((prompt, completion, good) => ({ prompt, completion, reward: good ? 1 : 0 }))
  return td
}

/**
 * `fn` over `items` with at most `limit` calls in flight, results in input order. An expert
 * queues a bounded number of requests (64 in flight, 512 waiting by default) and refuses the
 * rest as OVERLOADED, so a held-out set of 1,000 prompts cannot be sent at once.
 */
export async function mapLimited<T, R>(items: ReadonlyArray<T>, limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i]!, i)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker))
  return out
}

/** Requests one coordinator keeps in flight to one expert (below the expert's default 64). */
const IN_FLIGHT = 48

/** A round runner bound to one connection. */
export class Coordinator {
  readonly client: AgentClient
  state: RunState = foldEvents([])
  constructor(
    readonly nc: NatsConnection,
    readonly store: Store,
    readonly opts: RoundOptions,
  ) {
    this.client = makeClient(nc, opts.cluster)
  }

  static async open(nc: NatsConnection, opts: RoundOptions): Promise<Coordinator> {
    if (!/^[A-Za-z0-9_-]+$/.test(opts.run)) throw new Error(`run id "${opts.run}": use letters, digits, - and _ only`)
    if (!(Number.isInteger(opts.rounds) && opts.rounds >= 1)) throw new Error(`rounds must be a positive integer, got ${opts.rounds}`)
    if (opts.experts.length === 0) throw new Error("no experts: name at least one (--experts a,b)")
    const store = await Store.open(nc, opts.cluster)
    const c = new Coordinator(nc, store, opts)
    c.state = foldEvents(await store.events(opts.run))
    return c
  }

  private has(round: number, expert: string, step: Step) {
    return stepOf(this.state, this.opts.run, round, expert, step)
  }

  /** Record a step (once: a step already in the state is not sent again). */
  async record(round: number, expert: string, step: Step, data: Record<string, unknown>, id?: string): Promise<RoundEvent> {
    const e: RoundEvent = { run: this.opts.run, round, expert, step, at: new Date().toISOString(), ...(id ? { id } : {}), data }
    const prev = foldEvents([]).events
    void prev
    const k = `${e.run}.${e.round}.${e.expert}.${e.step}${id ? `.${id}` : ""}`
    const old = this.state.events.get(k)
    if (old) return old
    await this.store.record(e)
    this.state.events.set(k, e)
    this.state.log.push(e)
    this.opts.onEvent?.(e)
    return e
  }

  private adapterOf(ex: ExpertSpec) {
    return ex.adapter ?? ex.name
  }

  /**
   * The version the expert serves ("base" = no adapter): the registry's when the expert is
   * registered (a trained but not promoted version may have become the expert's own current
   * one), else what the expert reports. Also checks that the expert answers.
   */
  async currentVersion(ex: ExpertSpec): Promise<string> {
    const l = await this.client.call<AdapterList>(ex.name, "adapters-list", {}, { timeoutMs: 10_000 })
    const reg = await this.store.registry(ex.name)
    return reg?.current ?? l.adapters.find((a) => a.name === this.adapterOf(ex))?.current ?? "base"
  }

  /** Held-out accuracy of `version` of the expert's adapter ("base" = no adapter), greedy. */
  async evaluate(ex: ExpertSpec, version: string, opts: { seed?: number; n?: number } = {}): Promise<number> {
    const tasks = ex.tasks.tasks("test", opts.n ?? this.opts.heldOut ?? 60, opts.seed ?? 1000 + (this.opts.seed ?? 0))
    if (tasks.length === 0) throw new Error(`task ${ex.tasks.name} has no held-out prompts`)
    const adapter = version === "base" ? {} : { adapter: `${this.adapterOf(ex)}@${version}` }
    const outs = await mapLimited(tasks, IN_FLIGHT, (t) =>
      this.client.call(ex.name, "generate", { prompt: t.prompt, temperature: 0, maxTokens: this.opts.maxTokens ?? 12, ...adapter }, { timeoutMs: 120_000 }),
    )
    return tasks.filter((t, i) => ex.tasks.verify(t, outs[i]!.text) === 1).length / tasks.length
  }

  /** k sampled candidates per training prompt, scored by every reward source. */
  async sample(ex: ExpertSpec, round: number, version: string): Promise<{ groups: ScoredGroup[]; errors: RewardError[]; feedback?: FeedbackUse }> {
    const k = this.opts.k ?? 6
    const n = this.opts.prompts ?? 24
    const adapter = version === "base" ? {} : { adapter: `${this.adapterOf(ex)}@${version}` }
    const verifiable: RewardSource = { name: `verify:${ex.tasks.name}`, fn: (t: Task, c: string) => ex.tasks.verify(t, c) }
    const others = [...(this.opts.agreementWeight ? [agreementSource(this.opts.agreementWeight)] : []), ...(this.opts.rewardSources ?? [])]
    let tasks: Task[]
    let sources: RewardSource[]
    let feedback: FeedbackUse | undefined
    if (this.opts.promptSource === "feedback") {
      // the questions users asked, rewarded by their ratings (and better answers) from the console
      const fb = await readFeedback(this.nc, this.opts.cluster)
      const r = feedbackTasks(fb.items, ex.name, ex.tasks.fromQuestion ?? ((q) => ({ question: q, prompt: q })))
      tasks = r.tasks.slice(0, n)
      const prompts = new Set(tasks.map((t) => t.prompt))
      feedback = { items: fb.items.length, lastSeq: fb.lastSeq, invalid: fb.invalid, questions: r.tasks.length, userPairs: r.pairs.filter((p) => prompts.has(p.prompt)) }
      sources = [feedbackSource(fb.items, this.opts.feedbackWeight ?? 1), ...(this.opts.feedbackVerifiable ? [verifiable] : []), ...others]
    } else {
      tasks = ex.tasks.tasks("train", n, round * 7919 + (this.opts.seed ?? 0))
      sources = [verifiable, ...others]
    }
    // several prompts at a time (k candidates each), so the expert can batch their decoding
    const scored = await mapLimited(tasks, Math.max(1, Math.floor(IN_FLIGHT / k)), async (t, ti) => {
      const outs = await Promise.all(
        Array.from({ length: k }, (_, j) =>
          this.client.call(
            ex.name,
            "generate",
            // the first candidate is the greedy answer (what evaluation and users see: when it is
            // wrong it is the most useful rejected answer), the others are sampled
            { prompt: t.prompt, temperature: j === 0 ? 0 : (this.opts.temperature ?? 0.8), maxTokens: this.opts.maxTokens ?? 12, seed: round * 100_003 + ti * 101 + j, ...adapter },
            { timeoutMs: 120_000 },
          ),
        ),
      )
      const completions = outs.map((o) => o.text)
      return scoreGroup(t, completions, sources, completions)
    })
    const groups: ScoredGroup[] = scored.map((r) => r.group)
    const errors: RewardError[] = scored.flatMap((r) => r.errors)
    return { groups, errors, ...(feedback ? { feedback } : {}) }
  }

  /** Baseline, samples and the queued job of one expert for one round. */
  async prepare(round: number, ex: ExpertSpec): Promise<void> {
    const { run } = this.opts
    if (this.has(round, ex.name, "skipped") || this.has(round, ex.name, "job-queued")) return
    let version: string
    try {
      version = await this.currentVersion(ex)
    } catch (e) {
      await this.record(round, ex.name, "skipped", { reason: `adapters-list failed: ${reasonOf(e)}` })
      return
    }
    try {
      const reg = await this.store.registry(ex.name)
      if (!reg)
        await this.store.putRegistry({ expert: ex.name, adapter: this.adapterOf(ex), current: version, history: [{ version, action: "registered", at: new Date().toISOString() }] })
      if (!this.has(round, ex.name, "baseline")) {
        const accuracy = await this.evaluate(ex, version)
        await this.record(round, ex.name, "baseline", { version, accuracy })
      }
      let samples = this.has(round, ex.name, "samples")
      if (!samples) {
        const { groups, errors, feedback } = await this.sample(ex, round, version)
        const td = withUserPairs(trainingData(this.opts.algo, groups), feedback?.userPairs ?? [])
        const rs = groups.flatMap((g) => g.rewards).filter((r): r is number => r !== null)
        const right = groups.map((g) => g.rewards.filter((r) => r !== null && r >= 1).length)
        if (errors.length > 0)
          await this.record(round, ex.name, "reward-errors", { count: errors.length, reasons: [...new Set(errors.map((e) => `${e.source}: ${e.reason}`))].slice(0, 10), first: errors.slice(0, 5) })
        samples = await this.record(round, ex.name, "samples", {
          version,
          prompts: groups.length,
          k: this.opts.k ?? 6,
          rewardMean: rs.length ? rs.reduce((a, b) => a + b, 0) / rs.length : 0,
          sampledRight: right.reduce((a, b) => a + b, 0),
          algorithm: td.algorithm,
          examples: td.data.length,
          ...(feedback
            ? { source: "feedback", feedback: { items: feedback.items, lastSeq: feedback.lastSeq, questions: feedback.questions, userPairs: feedback.userPairs.length, invalid: feedback.invalid.length, invalidFirst: feedback.invalid.slice(0, 5) } }
            : { source: "tasks" }),
          data: td.data,
        })
      }
      const d = samples.data as { algorithm: string; data: unknown[]; version: string; source?: string; prompts: number; feedback?: { items: number } }
      if (d.data.length === 0) {
        await this.record(round, ex.name, "skipped", {
          reason:
            d.source === "feedback" && d.prompts === 0
              ? `no training examples: the feedback stream has no questions for this expert (${d.feedback?.items ?? 0} items read)`
              : "no training examples: no prompt had both a right and a wrong answer",
        })
        return
      }
      const jobId = `${run}.${round}.${ex.name}`
      const job: TrainJob = {
        jobId,
        run,
        round,
        expert: ex.name,
        adapter: this.adapterOf(ex),
        baseVersion: d.version === "base" ? "new" : d.version,
        algorithm: d.algorithm,
        data: d.data,
        hyper: { ...defaultHyper(this.opts.algo, d.data.length), ...(this.opts.hyper ?? {}) },
      }
      await this.store.enqueueJob(ex.name, job, jobId)
      await this.record(round, ex.name, "job-queued", { jobId, examples: d.data.length, algorithm: d.algorithm })
    } catch (e) {
      await this.record(round, ex.name, "skipped", { reason: `the expert failed during sampling/evaluation: ${reasonOf(e)}` })
    }
  }

  /** Whether the job of an expert for this round still waits for its outcome. */
  private pending(round: number) {
    return this.opts.experts.filter(
      (ex) => this.has(round, ex.name, "job-queued") && !this.has(round, ex.name, "trained") && !this.has(round, ex.name, "job-failed"),
    )
  }

  /** Work the job queue until every job of this round has an outcome (and nothing is left in the queue). */
  async drainJobs(round: number): Promise<void> {
    const consumer = await this.store.jobConsumer()
    let idle = 0
    while (true) {
      let got = false
      try {
        const m = await consumer.next({ expires: 4000 })
        if (m) {
          got = true
          await this.runJobMessage(round, m.subject, m.seq, m.data)
          m.ack()
        }
      } catch (e) {
        // a busy machine can miss the pull's idle heartbeats: pull again (an unacked job comes back)
        if (!/heartbeat/i.test(String((e as Error)?.message))) throw e
        continue
      }
      if (got) {
        idle = 0
        continue
      }
      if (this.pending(round).length === 0) return
      // a queued job is not in the stream (e.g. the run was resumed after its message was
      // consumed but before its outcome was recorded): send it again, same message id
      if (++idle >= 3) {
        for (const ex of this.pending(round)) {
          const s = this.has(round, ex.name, "samples")!.data as { algorithm: string; data: unknown[]; version: string }
          const jobId = `${this.opts.run}.${round}.${ex.name}`
          await this.store.enqueueJob(
            ex.name,
            {
              jobId,
              run: this.opts.run,
              round,
              expert: ex.name,
              adapter: this.adapterOf(ex),
              baseVersion: s.version === "base" ? "new" : s.version,
              algorithm: s.algorithm,
              data: s.data,
              hyper: { ...defaultHyper(this.opts.algo, s.data.length), ...(this.opts.hyper ?? {}) },
            },
            `${jobId}.retry${Date.now()}`,
          )
        }
        idle = 0
      }
    }
  }

  /** One job message: validate, skip when already done, run it on its expert, record the outcome. Never throws. */
  async runJobMessage(round: number, subject: string, seq: number, bytes: Uint8Array): Promise<void> {
    const target = subject.split(".").pop() ?? "?"
    let job: TrainJob
    try {
      const raw = JSON.parse(new TextDecoder().decode(bytes))
      job = Schema.decodeUnknownSync(TrainJob)(raw, { errors: "first" })
    } catch (e) {
      await this.record(round, target, "job-invalid", { seq, subject, reason: `the job message fails its schema: ${e instanceof Error ? e.message.split("\n").slice(0, 4).join(" ") : String(e)}` }, `seq${seq}`)
      return
    }
    if (job.run !== this.opts.run) {
      await this.record(round, target, "job-invalid", { seq, subject, jobId: job.jobId, reason: `job of run "${job.run}", not of this run "${this.opts.run}": dropped` }, `seq${seq}`)
      return
    }
    if (stepOf(this.state, job.run, job.round, job.expert, "trained") || stepOf(this.state, job.run, job.round, job.expert, "job-failed")) return // done before: counted once
    const deadline = Date.now() + (this.opts.trainTimeoutMs ?? 15 * 60_000)
    const grace = this.opts.expertGraceMs ?? 60_000
    // a quick liveness check first: a vanished expert fails within the grace period, not at the train deadline
    const gone = await this.waitForExpert(job.expert, grace)
    if (gone) {
      await this.record(job.round, job.expert, "job-failed", { jobId: job.jobId, reason: gone })
      return
    }
    while (true) {
      try {
        type Trained = { version: string; baseVersion: string; losses: number[]; examples: number; steps: number; metrics: Record<string, number>; dir: string; objects?: string[] }
        const call = this.client.call<Trained>(
          job.expert,
          "train",
          { adapter: job.adapter, baseVersion: job.baseVersion, algorithm: job.algorithm, data: job.data, hyper: job.hyper, jobId: job.jobId, promote: false },
          { timeoutMs: Math.max(1000, deadline - Date.now()) },
        )
        // the reply of an expert killed mid-job never comes: watch that the expert is still there
        const stop = new AbortController()
        const died = this.watchJob(job.expert, job.jobId, stop.signal)
        call.catch(() => undefined)
        const first = await Promise.race([call.then((r) => ({ r })), died.then((reason) => ({ died: reason }))]).finally(() => stop.abort())
        if ("died" in first) {
          // it may come back (restarted, another replica): the job is sent again — the expert
          // trains a job id once (a finished one is answered from its saved summary)
          this.opts.onNote?.(`job ${job.jobId}: ${first.died}; sending it again`)
          const still = await this.waitForExpert(job.expert, grace)
          if (still) {
            await this.record(job.round, job.expert, "job-failed", { jobId: job.jobId, reason: `the expert disappeared during training and did not come back: ${still}` })
            return
          }
          continue
        }
        const res = first.r
        // the expert puts the new version in the Object Store itself (any host); an older expert
        // that does not is helped when its folder is readable from here
        let objects: string[] = [...(res.objects ?? [])]
        if (objects.length === 0) objects = await this.store.uploadAdapter(job.expert, job.adapter, res.version, res.dir).catch(() => [])
        await this.record(job.round, job.expert, "trained", {
          jobId: job.jobId,
          version: res.version,
          baseVersion: res.baseVersion,
          examples: res.examples,
          steps: res.steps,
          lossFirst: res.losses[0],
          lossLast: res.losses[res.losses.length - 1],
          metrics: res.metrics,
          objects,
        })
        return
      } catch (e) {
        const code = (e as MoaError)?.code
        if (code === "OVERLOADED" && Date.now() < deadline) {
          // the expert is still busy with a job (e.g. one a killed coordinator started): wait
          await new Promise((r) => setTimeout(r, 2000))
          continue
        }
        await this.record(job.round, job.expert, "job-failed", { jobId: job.jobId, reason: reasonOf(e) })
        return
      }
    }
  }

  /** undefined when the expert answers within `graceMs` (polled every 2 s), else why not. */
  private async waitForExpert(expert: string, graceMs: number): Promise<string | undefined> {
    const until = Date.now() + graceMs
    while (true) {
      try {
        await this.client.call(expert, "adapters-list", {}, { timeoutMs: 15_000 })
        return undefined
      } catch (e) {
        if (Date.now() >= until) return reasonOf(e)
        await new Promise((r) => setTimeout(r, 2000))
      }
    }
  }

  /**
   * Resolves (with the reason) once the job is lost: twice in a row (polled every 3 s until
   * `signal` aborts) the expert has no responders, or answers but is not running `jobId` — it
   * was killed and restarted, so the request died with the old process. Sending the job again is
   * safe: the expert joins a job id it is running and answers a finished one from its summary.
   * A slow answer is not a loss.
   */
  private async watchJob(expert: string, jobId: string, signal: AbortSignal): Promise<string> {
    let misses = 0
    while (!signal.aborted) {
      await new Promise((r) => setTimeout(r, 3000))
      if (signal.aborted) break
      let why: string | undefined
      try {
        const i = await this.client.call<{ pid: number; training: { running?: string } }>(expert, "model-info", {}, { timeoutMs: 15_000 })
        if (!i.training.running?.includes(jobId)) why = `the expert (pid ${i.pid}) is not running job ${jobId}: it was restarted`
      } catch (e) {
        const r = reasonOf(e)
        if (/no responders/.test(r)) why = r
      }
      misses = why ? misses + 1 : 0
      if (why && misses >= 2) return why
    }
    return new Promise<string>(() => undefined) // never: the train call won the race
  }

  /** Evaluate the candidate and promote it when better. */
  async finish(round: number, ex: ExpertSpec): Promise<void> {
    const trained = this.has(round, ex.name, "trained")
    if (!trained || this.has(round, ex.name, "decided") || this.has(round, ex.name, "skipped")) return
    const version = String(trained.data.version)
    try {
      let ev = this.has(round, ex.name, "evaluated")
      if (!ev) ev = await this.record(round, ex.name, "evaluated", { version, accuracy: await this.evaluate(ex, version) })
      const current = Number(this.has(round, ex.name, "baseline")!.data.accuracy)
      const candidate = Number(ev.data.accuracy)
      const d = decide(current, candidate, this.opts.minGain ?? 0)
      if (d.promote) {
        await this.client.call(ex.name, "adapters-load", { name: this.adapterOf(ex), version }, { timeoutMs: 30_000 })
        const reg = await this.store.registry(ex.name)
        await this.store.putRegistry({
          expert: ex.name,
          adapter: this.adapterOf(ex),
          current: version,
          history: [...(reg?.history ?? []), { version, run: this.opts.run, round, accuracy: candidate, action: "promoted", at: new Date().toISOString(), objects: trained.data.objects as string[] }],
        })
      }
      else {
        // keep serving the registered version (training may have moved the expert's own pointer)
        const reg = await this.store.registry(ex.name)
        if (reg && reg.current !== "base") await this.client.call(ex.name, "adapters-load", { name: this.adapterOf(ex), version: reg.current }, { timeoutMs: 30_000 })
      }
      await this.record(round, ex.name, "decided", { version, promote: d.promote, reason: d.reason, current, candidate })
    } catch (e) {
      await this.record(round, ex.name, "skipped", { reason: `the expert failed during evaluation/promotion: ${reasonOf(e)}` })
    }
  }

  /** Run (or resume) every round. */
  async run(): Promise<RunState> {
    const o = this.opts
    await this.record(0, "_", "run-started", { algo: o.algo, rounds: o.rounds, experts: o.experts.map((e) => ({ name: e.name, adapter: this.adapterOf(e), tasks: e.tasks.name })), k: o.k ?? 6, prompts: o.prompts ?? 24, heldOut: o.heldOut ?? 60 })
    for (let round = 1; round <= o.rounds; round++) {
      if (this.has(round, "_", "round-done")) continue
      for (const ex of o.experts) await this.prepare(round, ex)
      await this.drainJobs(round)
      for (const ex of o.experts) await this.finish(round, ex)
      await this.record(round, "_", "round-done", {})
    }
    return this.state
  }
}

/**
 * Roll an expert back (or forward) to any version it ever had; "base" drops the adapter. One
 * `adapters-load { name, version }`: the expert re-registers a version still on its disk, or
 * fetches it from the Object Store (`moa_weights_<cluster>`) when it is on another host or its
 * artifacts folder is new — no shared filesystem. An expert not in the registry is refused unless
 * `opts.register` names the adapter to register it with.
 */
export async function rollback(nc: NatsConnection, cluster: string, expert: string, version: string, opts: { register?: { adapter: string } } = {}): Promise<RegistryEntry> {
  const store = await Store.open(nc, cluster)
  const client = makeClient(nc, cluster)
  // `register`: an expert no round has registered yet gets its entry here (a bench that picks the starting version)
  const reg = (await store.registry(expert)) ?? (opts.register ? { expert, adapter: opts.register.adapter, current: "unregistered", history: [] } : undefined)
  if (!reg) throw new Error(`no expert "${expert}" in the registry of cluster ${cluster}: known: ${(await store.registryAll()).map((r) => r.expert).join(", ") || "none (run a round first)"}`)
  if (version === "base") await client.call(expert, "adapters-unload", { name: reg.adapter }, { timeoutMs: 30_000 })
  else await client.call(expert, "adapters-load", { name: reg.adapter, version }, { timeoutMs: 120_000 })
  return finishRollback(store, reg, expert, version)
}

async function finishRollback(store: Store, reg: RegistryEntry, expert: string, version: string): Promise<RegistryEntry> {
  const next: RegistryEntry = { ...reg, current: version, history: [...reg.history, { version, action: "rollback", at: new Date().toISOString() }] }
  await store.putRegistry(next)
  await store.record({ run: "admin", round: 0, expert, step: "rollback", at: new Date().toISOString(), id: String(Date.now()), data: { from: reg.current, to: version } })
  return next
}

/** Effect form: connect, run (or resume) the rounds, close. */
export const runRounds = (natsUrl: string, opts: RoundOptions): Effect.Effect<RunState, Error> =>
  Effect.acquireUseRelease(
    Effect.tryPromise({ try: () => connect({ servers: natsUrl }), catch: (e) => new Error(`cannot connect to NATS at ${natsUrl}: ${String(e)}`) }),
    (nc) =>
      Effect.tryPromise({
        try: async () => (await Coordinator.open(nc, opts)).run(),
        catch: (e) => (e instanceof Error ? e : new Error(String(e))),
      }),
    (nc) => Effect.promise(() => nc.close()),
  )

export { foldEvents }
