/**
 * Preference data from the console, kept in JetStream so the coordinator (or anyone) can read it:
 * stream `MOA_FEEDBACK_<cluster>` on `moa.<cluster>.feedback.>`, one JSON message per item:
 *
 *   moa.<cluster>.feedback.rating  {"kind":"rating","question","answer","rating":1|0,"mode","expert"?,"at"}
 *   moa.<cluster>.feedback.better  {"kind":"better","question","chosen","rejected","mode","at"}
 *
 * `rating` items are what the coordinator's `ratingsSource` takes ({question, answer, rating in
 * [0,1]}); `better` items are DPO pairs ({prompt: question, chosen, rejected}).
 */
import type { NatsConnection } from "@nats-io/nats-core"
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream"

export interface RatingItem {
  readonly kind: "rating"
  readonly question: string
  readonly answer: string
  readonly rating: number
  readonly mode: string
  readonly expert?: string
  readonly at: string
}
export interface BetterItem {
  readonly kind: "better"
  readonly question: string
  readonly chosen: string
  readonly rejected: string
  readonly mode: string
  readonly at: string
}
export type FeedbackItem = RatingItem | BetterItem

export const feedbackStream = (cluster: string) => `MOA_FEEDBACK_${cluster.replace(/[^A-Za-z0-9_-]/g, "_")}`
export const feedbackSubject = (cluster: string, kind: FeedbackItem["kind"] | ">") => `moa.${cluster}.feedback.${kind}`

/** Create the stream when it is missing (file storage: ratings survive a restart of NATS with a store). */
export const ensureFeedbackStream = async (nc: NatsConnection, cluster: string): Promise<void> => {
  const jsm = await jetstreamManager(nc).catch((e: Error) => {
    throw new Error(`JetStream is not available on ${nc.getServer()} (${e.message}): ratings need nats-server -js (moa up starts one)`)
  })
  const name = feedbackStream(cluster)
  try {
    await jsm.streams.info(name)
  } catch {
    await jsm.streams.add({ name, subjects: [feedbackSubject(cluster, ">")] })
  }
}

/** Store one item; returns its stream sequence number. */
export const recordFeedback = async (nc: NatsConnection, cluster: string, item: FeedbackItem): Promise<number> => {
  if (!item.question.trim()) throw new Error("feedback: the question is empty")
  if (item.kind === "rating" && !(item.rating >= 0 && item.rating <= 1)) throw new Error(`feedback: rating must be in [0,1], got ${item.rating}`)
  if (item.kind === "better" && !item.chosen.trim()) throw new Error("feedback: the better answer is empty; write /better <answer>")
  await ensureFeedbackStream(nc, cluster)
  const ack = await jetstream(nc).publish(feedbackSubject(cluster, item.kind), JSON.stringify(item))
  return ack.seq
}

/** Every stored item, oldest first (what a coordinator reads before a round). */
export const readFeedback = async (nc: NatsConnection, cluster: string): Promise<FeedbackItem[]> => {
  await ensureFeedbackStream(nc, cluster)
  const jsm = await jetstreamManager(nc)
  const info = await jsm.streams.info(feedbackStream(cluster))
  const n = info.state.messages
  if (n === 0) return []
  const c = await jetstream(nc).consumers.get(feedbackStream(cluster), { deliver_policy: DeliverPolicy.All })
  const out: FeedbackItem[] = []
  const it = await c.fetch({ max_messages: n, expires: 2000 })
  for await (const m of it) {
    out.push(JSON.parse(new TextDecoder().decode(m.data)) as FeedbackItem)
    if (out.length >= n) break
  }
  return out
}
