/**
 * User feedback as a round's prompts and reward: what `moa console` stores (docs/console.md) in the
 * stream `MOA_FEEDBACK_<cluster>` on `moa.<cluster>.feedback.>`, one JSON message per item:
 *
 *   rating  {"kind":"rating","question","answer","rating" ∈ [0,1],"mode","expert"?,"at"}
 *   better  {"kind":"better","question","chosen","rejected","mode","at"}
 *
 * A round with `promptSource: "feedback"` takes the questions users asked as its training
 * prompts, scores the expert's candidates with the users' ratings (`feedbackSource`: a rating of
 * that answer to that question, a better answer counts as 1 and the answer it replaced as 0) and
 * adds the users' better answers as preference pairs. Every message is decoded through the schema
 * below; one that fails is reported with its sequence number and why, and skipped.
 */
import type { NatsConnection } from "@nats-io/nats-core"
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream"
import { Schema } from "effect"
import type { RewardSource, Task } from "./logic.ts"

const NonEmpty = Schema.String.pipe(Schema.filter((s) => s.trim().length > 0, { message: () => "must not be empty" }))
export const RatingItem = Schema.Struct({
  kind: Schema.Literal("rating"),
  question: NonEmpty,
  answer: Schema.String,
  rating: Schema.Number.pipe(Schema.between(0, 1)),
  mode: Schema.optional(Schema.String),
  expert: Schema.optional(Schema.String),
  at: Schema.optional(Schema.String),
})
export const BetterItem = Schema.Struct({
  kind: Schema.Literal("better"),
  question: NonEmpty,
  chosen: NonEmpty,
  rejected: Schema.String,
  mode: Schema.optional(Schema.String),
  at: Schema.optional(Schema.String),
})
export const FeedbackItem = Schema.Union(RatingItem, BetterItem)
export type FeedbackItem = typeof FeedbackItem.Type

export const feedbackStream = (cluster: string) => `MOA_FEEDBACK_${cluster.replace(/[^A-Za-z0-9_-]/g, "_")}`
export const feedbackSubject = (cluster: string) => `moa.${cluster}.feedback.>`

export interface FeedbackRead {
  readonly items: FeedbackItem[]
  /** messages that are not feedback items: stream sequence and the reason */
  readonly invalid: { seq: number; reason: string }[]
  /** last stream sequence read (0 when the stream is empty or missing) */
  readonly lastSeq: number
}

/** Decode one message (JSON, then the schema); the reason says what is wrong. */
export function decodeFeedback(bytes: Uint8Array | string): { item: FeedbackItem } | { reason: string } {
  let raw: unknown
  try {
    raw = JSON.parse(typeof bytes === "string" ? bytes : new TextDecoder().decode(bytes))
  } catch (e) {
    return { reason: `not JSON: ${(e as Error).message}` }
  }
  const r = Schema.decodeUnknownEither(FeedbackItem)(raw, { errors: "first" })
  return r._tag === "Right" ? { item: r.right } : { reason: `not a feedback item: ${r.left.message.split("\n").slice(-1)[0]?.trim()}` }
}

/** Every message of the cluster's feedback stream, oldest first (none when the stream does not exist). */
export async function readFeedback(nc: NatsConnection, cluster: string): Promise<FeedbackRead> {
  const jsm = await jetstreamManager(nc)
  const name = feedbackStream(cluster)
  let lastSeq = 0
  try {
    const info = await jsm.streams.info(name)
    if (info.state.messages === 0) return { items: [], invalid: [], lastSeq: info.state.last_seq }
    lastSeq = info.state.last_seq
  } catch {
    return { items: [], invalid: [], lastSeq: 0 }
  }
  const ci = await jsm.consumers.add(name, { deliver_policy: DeliverPolicy.All, ack_policy: AckPolicy.None, inactive_threshold: 60 * 1e9 })
  const c = await jetstream(nc).consumers.get(name, ci.name)
  const items: FeedbackItem[] = []
  const invalid: { seq: number; reason: string }[] = []
  try {
    for (;;) {
      const pending = (await c.info()).num_pending // fresh, not the cached count
      if (pending === 0) break
      try {
        const batch = await c.fetch({ max_messages: Math.min(pending, 500), expires: 5000 })
        for await (const m of batch) {
          const d = decodeFeedback(m.data)
          if ("item" in d) items.push(d.item)
          else invalid.push({ seq: m.seq, reason: d.reason })
        }
      } catch (e) {
        if (!/heartbeat/i.test(String((e as Error)?.message))) throw e
      }
    }
  } finally {
    await c.delete().catch(() => undefined)
  }
  return { items, invalid, lastSeq }
}

const key = (question: string, answer: string) => `${question.trim()}\u0000${answer.trim()}`

/**
 * The reward users gave: the mean rating of this answer to this question; a better answer a user
 * wrote counts as a rating of 1, the answer it replaced as 0. Abstains on answers nobody rated.
 */
export function feedbackSource(items: ReadonlyArray<FeedbackItem>, weight = 1): RewardSource {
  const by = new Map<string, number[]>()
  const add = (q: string, a: string, r: number) => {
    if (!a.trim()) return
    by.set(key(q, a), [...(by.get(key(q, a)) ?? []), r])
  }
  for (const i of items) {
    if (i.kind === "rating") add(i.question, i.answer, i.rating)
    else {
      add(i.question, i.chosen, 1)
      add(i.question, i.rejected, 0)
    }
  }
  return {
    name: "user-ratings",
    weight,
    fn: (t, c) => {
      const rs = by.get(key(t.question, c))
      return rs ? rs.reduce((a, b) => a + b, 0) / rs.length : undefined
    },
  }
}

/**
 * The training prompts of one expert from feedback: each distinct question (oldest first) that
 * `toTask` maps to this expert's prompt format (undefined = not this expert's question) and that
 * was rated on this expert (a rating naming another expert is not), with the user's better
 * answer — else an answer rated 1 — as its reference. Also the users' better answers as pairs.
 */
export function feedbackTasks(
  items: ReadonlyArray<FeedbackItem>,
  expert: string,
  toTask: (question: string) => Task | undefined,
): { tasks: Task[]; pairs: { prompt: string; chosen: string; rejected: string }[] } {
  const order: string[] = []
  const good = new Map<string, string>()
  const better = new Map<string, string>()
  for (const i of items) {
    if (i.kind === "rating" && i.expert !== undefined && i.expert !== expert) continue
    const q = i.question.trim()
    if (!order.includes(q)) order.push(q)
    if (i.kind === "better") better.set(q, i.chosen.trim())
    else if (i.rating >= 1 && i.answer.trim()) good.set(q, i.answer.trim())
  }
  const tasks: Task[] = []
  const prompts = new Map<string, string>()
  for (const q of order) {
    const t = toTask(q)
    if (!t) continue
    const reference = better.get(q) ?? good.get(q)
    tasks.push({ question: t.question, prompt: t.prompt, ...(reference !== undefined ? { reference } : {}) })
    prompts.set(q, t.prompt)
  }
  const pairs: { prompt: string; chosen: string; rejected: string }[] = []
  const seen = new Set<string>()
  for (const i of items) {
    if (i.kind !== "better") continue
    const prompt = prompts.get(i.question.trim())
    if (prompt === undefined || !i.rejected.trim() || i.chosen.trim() === i.rejected.trim()) continue
    const k = `${prompt}\u0000${i.chosen.trim()}\u0000${i.rejected.trim()}`
    if (seen.has(k)) continue
    seen.add(k)
    pairs.push({ prompt, chosen: i.chosen.trim(), rejected: i.rejected.trim() })
  }
  return { tasks, pairs }
}
