// Aggregators: how a set of candidate answers becomes one answer.
//   vote       — weighted vote over normalised answers (weights: gate probabilities or 1 each)
//   best-of-n  — the candidate a scorer (reward function or judge agent) rates highest
//   model      — an aggregator expert reads the question plus the candidates and writes the answer
//                (the togethercomputer/MoA aggregate-and-synthesise step); the prompt format and
//                the builder of its training set live here too.
import type { ExpertClient } from "./client.ts"

export interface Candidate {
  readonly expert: string
  readonly text: string
  /** Weight in a vote (gate probability, or 1). */
  readonly weight: number
}

/** How answers are compared: trim, collapse whitespace, Unicode NFC. Case is kept (exact match is case-sensitive). */
export const normalizeAnswer = (s: string): string => s.normalize("NFC").trim().replace(/\s+/g, " ")

export interface VoteDecision {
  readonly kind: "vote"
  readonly answer: string
  /** Total weight per normalised answer. */
  readonly tally: Record<string, number>
}

/** Weighted vote; ties go to the answer whose best single supporter has the higher weight, then to the earliest. */
export const weightedVote = (candidates: ReadonlyArray<Candidate>): VoteDecision => {
  if (candidates.length === 0) throw new Error("weightedVote: no candidates to vote on")
  const tally = new Map<string, { w: number; best: number; first: number }>()
  candidates.forEach((c, i) => {
    const key = normalizeAnswer(c.text)
    const t = tally.get(key) ?? { w: 0, best: -Infinity, first: i }
    t.w += c.weight
    t.best = Math.max(t.best, c.weight)
    tally.set(key, t)
  })
  const ranked = [...tally.entries()].sort((a, b) => b[1].w - a[1].w || b[1].best - a[1].best || a[1].first - b[1].first)
  return { kind: "vote", answer: ranked[0][0], tally: Object.fromEntries([...tally].map(([k, v]) => [k, v.w])) }
}

/** Rates one candidate answer to a question; higher is better. */
export type Scorer = (question: string, answer: string) => Promise<number> | number

export interface BestOfNDecision {
  readonly kind: "best-of-n"
  readonly answer: string
  readonly scores: ReadonlyArray<number>
  readonly index: number
}

/** The candidate with the highest score (ties: the higher weight, then the earliest). A scorer that throws scores -Infinity. */
export const bestOfN = async (question: string, candidates: ReadonlyArray<Candidate>, scorer: Scorer): Promise<BestOfNDecision> => {
  if (candidates.length === 0) throw new Error("bestOfN: no candidates to score")
  const scores = await Promise.all(
    candidates.map(async (c) => {
      try {
        const s = await scorer(question, normalizeAnswer(c.text))
        return Number.isFinite(s) ? s : -Infinity
      } catch {
        return -Infinity
      }
    }),
  )
  let index = 0
  for (let i = 1; i < candidates.length; i++) {
    if (scores[i] > scores[index] || (scores[i] === scores[index] && candidates[i].weight > candidates[index].weight)) index = i
  }
  return { kind: "best-of-n", answer: normalizeAnswer(candidates[index].text), scores, index }
}

// ---- the aggregator prompt ---------------------------------------------------------------------
// Short on purpose: the experts are small character models with short contexts.
//   "<question> | <candidate 1> | <candidate 2> | … ="
// An expert fine-tuned on `buildAggregatorDataset` learns to write the right answer after "=".
// Candidates never contain " | " (it is escaped to "/").

export const AGG_SEP = " | "
export const AGG_END = " ="

export const formatAggregatorPrompt = (question: string, candidates: ReadonlyArray<string>): string =>
  [question.trim(), ...candidates.map((c) => normalizeAnswer(c).split("|").join("/"))].join(AGG_SEP) + AGG_END

/** Inverse of formatAggregatorPrompt (for agents that serve as aggregators), or undefined when the text is not one. */
export const parseAggregatorPrompt = (prompt: string): { question: string; candidates: string[] } | undefined => {
  if (!prompt.endsWith(AGG_END) || !prompt.includes(AGG_SEP)) return undefined
  const [question, ...candidates] = prompt.slice(0, -AGG_END.length).split(AGG_SEP)
  return { question, candidates }
}

export interface ModelDecision {
  readonly kind: "model"
  readonly expert: string
  readonly answer: string
  readonly prompt: string
  readonly latencyMs: number
  readonly tokens: number
}

/** Ask an aggregator expert to write the final answer from the question and the candidates. */
export const aggregateWithModel = async (
  client: ExpertClient,
  question: string,
  candidates: ReadonlyArray<Candidate>,
  opts: { deadlineMs: number; maxTokens?: number },
): Promise<ModelDecision> => {
  const prompt = formatAggregatorPrompt(question, candidates.map((c) => c.text))
  const r = await client.generate({ prompt, temperature: 0, maxTokens: opts.maxTokens }, { deadlineMs: opts.deadlineMs })
  return { kind: "model", expert: client.name, answer: normalizeAnswer(r.text), prompt, latencyMs: r.latencyMs, tokens: r.tokens }
}

/** A scorer that asks a judge agent: it gets "judge: <question> | <answer> =" and answers a number (1 = right, 0 = wrong). */
export const judgeScorer =
  (judge: ExpertClient, deadlineMs: number): Scorer =>
  async (question, answer) => {
    const r = await judge.generate({ prompt: `judge: ${formatAggregatorPrompt(question, [answer])}`, temperature: 0, maxTokens: 8 }, { deadlineMs })
    const n = Number.parseFloat(r.text.trim())
    if (!Number.isFinite(n)) throw new Error(`judge ${judge.name} answered "${r.text}", which is not a number`)
    return n
  }

export interface CandidateSet {
  readonly question: string
  /** The right answer (from the skill checker). */
  readonly answer: string
  readonly candidates: ReadonlyArray<string>
}

/**
 * Training set for an aggregator model (TRL's prompt/completion shape) from candidate sets the
 * cluster produced: prompt = the aggregator prompt, completion = the right answer. Each set is
 * used in `orders` candidate orders (shuffled with a seeded RNG) so the model cannot learn
 * "copy the first"; sets where no candidate was right are kept (fraction `keepAllWrong`) so it
 * also learns to correct, not only to select.
 */
export const buildAggregatorDataset = (
  sets: ReadonlyArray<CandidateSet>,
  opts: { orders?: number; seed?: number; keepAllWrong?: number } = {},
): Array<{ prompt: string; completion: string }> => {
  const orders = opts.orders ?? 2
  const keepAllWrong = opts.keepAllWrong ?? 1
  let s = (opts.seed ?? 1) >>> 0
  const rnd = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 4294967296
  }
  const out: Array<{ prompt: string; completion: string }> = []
  for (const set of sets) {
    if (set.candidates.length === 0) continue
    const anyRight = set.candidates.some((c) => normalizeAnswer(c) === normalizeAnswer(set.answer))
    if (!anyRight && rnd() >= keepAllWrong) continue
    const seen = new Set<string>()
    for (let o = 0; o < orders; o++) {
      const cs = [...set.candidates]
      for (let i = cs.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1))
        ;[cs[i], cs[j]] = [cs[j], cs[i]]
      }
      const prompt = formatAggregatorPrompt(set.question, cs)
      if (seen.has(prompt)) continue
      seen.add(prompt)
      out.push({ prompt, completion: normalizeAnswer(set.answer) })
    }
  }
  return out
}
