// User ratings as a round's reward (issue 6): what `moa console` stores in MOA_FEEDBACK_<cluster>
// (written here with the console's own recordFeedback) becomes a round's training prompts, its
// reward (the users' ratings of the expert's answers, their better answers counted right) and
// extra preference pairs (the better answers); questions of another skill or rated on another
// expert are left out, a message that is not a feedback item is counted and skipped. The round
// then trains, evaluates on held-out prompts and decides as any other.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { NatsConnection } from "@nats-io/nats-core"
import { jetstream } from "@nats-io/jetstream"
import { makeClient } from "@moa/runtime"
import { generate, parse, reward, solve } from "@moa/skills"
import { recordFeedback } from "../../cli/src/console/feedback.ts"
import { Coordinator, feedbackSource, feedbackTasks, readFeedback, skillTasks, summarize, type FeedbackItem } from "../src/index.ts"
import { openHarness, type Harness } from "./helpers.ts"

const CLUSTER = "cfb"
let h: Harness
let nc: NatsConnection

beforeAll(async () => {
  h = await openHarness("feedback", CLUSTER)
  nc = h.nc
  await h.expert("sort")
}, 400_000)

afterAll(() => h?.close())

describe("feedback as prompts and reward (pure parts)", () => {
  const items: FeedbackItem[] = [
    { kind: "rating", question: "sort cab", answer: "abc", rating: 1, mode: "moe", expert: "sort", at: "t" },
    { kind: "rating", question: "sort cba", answer: "acb", rating: 0, mode: "moe", at: "t" },
    { kind: "better", question: "sort cba", chosen: "abc", rejected: "acb", mode: "moe", at: "t" },
    { kind: "rating", question: "sort bba", answer: "bba", rating: 0, mode: "moe", expert: "other", at: "t" },
    { kind: "rating", question: "add 2 3", answer: "5", rating: 1, mode: "moe", at: "t" },
  ]
  it("keeps this expert's questions with the users' right answers as references, and their better answers as pairs", () => {
    const r = feedbackTasks(items, "sort", skillTasks("sort").fromQuestion!)
    expect(r.tasks).toEqual([
      { question: "sort cab", prompt: "sort cab=", reference: "abc" },
      { question: "sort cba", prompt: "sort cba=", reference: "abc" },
    ])
    expect(r.pairs).toEqual([{ prompt: "sort cba=", chosen: "abc", rejected: "acb" }])
  })
  it("scores an answer by its ratings, a better answer as 1 and the one it replaced as 0, and abstains otherwise", () => {
    const s = feedbackSource(items)
    const t = (question: string) => ({ question, prompt: `${question}=` })
    expect(s.fn(t("sort cab"), "abc", { peers: [] })).toBe(1)
    expect(s.fn(t("sort cba"), "acb", { peers: [] })).toBe(0) // rated 0 and replaced
    expect(s.fn(t("sort cba"), "abc", { peers: [] })).toBe(1)
    expect(s.fn(t("sort cba"), "bca", { peers: [] })).toBeUndefined()
  })
})

describe("a round over the console's feedback stream", () => {
  it("takes its prompts and pairs from the users' ratings and better answers, trains, evaluates and decides", async () => {
    // a user asks 20 sort questions (and one add question) in the console, rates each answer, and writes the right one when it is wrong
    const client = makeClient(nc, CLUSTER)
    const questions = generate("sort", { n: 20, seed: 11, split: "train", size: "ci", unique: true }).map((e) => e.question)
    let better = 0
    for (const q of questions) {
      const t = skillTasks("sort").fromQuestion!(q)!
      const answer = parse(q, (await client.call("sort", "generate", { prompt: t.prompt, temperature: 0, maxTokens: 12 })).text)
      const right = reward(q, answer) === 1
      await recordFeedback(nc, CLUSTER, { kind: "rating", question: q, answer, rating: right ? 1 : 0, mode: "moe", expert: "sort", at: new Date().toISOString() })
      if (!right) {
        const chosen = answerOf(q)
        await recordFeedback(nc, CLUSTER, { kind: "better", question: q, chosen, rejected: answer, mode: "moe", at: new Date().toISOString() })
        better++
      }
    }
    await recordFeedback(nc, CLUSTER, { kind: "rating", question: "add 2 3", answer: "5", rating: 1, mode: "moe", at: new Date().toISOString() })
    await jetstream(nc).publish(`moa.${CLUSTER}.feedback.rating`, "{not a feedback item")
    expect(better).toBeGreaterThan(5)
    const read = await readFeedback(nc, CLUSTER)
    expect(read.items).toHaveLength(20 + better + 1)
    expect(read.invalid).toEqual([{ seq: read.lastSeq, reason: expect.stringMatching(/not JSON/) }])

    const c = await Coordinator.open(nc, {
      cluster: CLUSTER,
      run: "fb1",
      algo: "orpo",
      rounds: 1,
      promptSource: "feedback",
      experts: [{ name: "sort", tasks: skillTasks("sort") }],
      prompts: 24,
      k: 6,
      heldOut: 200,
      hyper: { maxSteps: 30, learningRate: 1e-3 },
    })
    const state = await c.run()
    const log = JSON.stringify(state.log.map((e) => [e.step, e.data.reason]))
    const samples = state.log.find((e) => e.step === "samples")!.data as {
      source: string
      prompts: number
      feedback: { items: number; questions: number; userPairs: number; invalid: number }
      data: { prompt: string; chosen: string; rejected: string }[]
    }
    expect(samples.source, log).toBe("feedback")
    expect(samples.prompts).toBe(20) // the sort questions; the add question is not this expert's
    expect(samples.feedback).toMatchObject({ items: 20 + better + 1, questions: 20, userPairs: better, invalid: 1 })
    const feedbackPrompts = new Set(questions.map((q) => skillTasks("sort").fromQuestion!(q)!.prompt))
    expect(samples.data.every((p) => feedbackPrompts.has(p.prompt))).toBe(true)
    // every better answer the user wrote is a pair the expert trains on
    const read2 = (await readFeedback(nc, CLUSTER)).items.filter((i) => i.kind === "better")
    for (const b of read2) expect(samples.data).toContainEqual({ prompt: skillTasks("sort").fromQuestion!(b.question)!.prompt, chosen: b.chosen, rejected: b.rejected })
    expect(state.log.find((e) => e.step === "reward-errors")).toBeUndefined()
    const [row] = summarize(state)
    expect(row?.version, log).toBe("v1")
    expect(state.log.map((e) => e.step)).toEqual(["run-started", "baseline", "samples", "job-queued", "trained", "evaluated", "decided", "round-done"])
    console.log(`feedback round: held-out ${row!.accBefore} → candidate ${row!.accCandidate} (${row!.promoted ? "promoted" : "kept"}), ${samples.data.length} pairs, ${better} written by the user`)
  }, 300_000)
})

/** The right answer to a question (what a user would type as the better answer). */
const answerOf = (q: string) => solve(q)!.answer
