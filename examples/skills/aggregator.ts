/**
 * The skills cluster's aggregator model: a LoRA adapter on the shared skills base that reads a
 * question plus the candidate answers the experts gave and writes the final answer (the
 * "aggregate-and-synthesise" step of togethercomputer/MoA, as a fine-tuned expert).
 *
 * On the wire it speaks the router's aggregator prompt (`@moa/router` formatAggregatorPrompt:
 * `"<question> | <c1> | <c2> | … ="`); inside, the model sees a compact form that fits its
 * 96-character context and carries the vote: numbered distinct candidates, most frequent first,
 * each with its count; it answers the number of the one it picks, or 0 and its own answer,
 *
 *     reverse kdjw|1 wjdk(3)|2 wjkd(1)=      →   1   (→ wjdk)
 *     add 12 30|1 41(2)|2 43(1)=             →   042 (→ 42)
 *
 * Candidates that do not fit are dropped from the end (the least supported). Trained by
 * `train-aggregator.ts` on candidate sets the experts themselves produce.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { defineExpert } from "@moa/expert"
import { moaError, type GenerateRequest, type GenerateResponse } from "@moa/protocol"
import { detectSkill, type SkillName } from "@moa/skills"
import type { AgentDefinition } from "@moa/runtime"

const here = path.dirname(fileURLToPath(import.meta.url))
export const AGGREGATOR_DIR = path.join(here, "artifacts", "aggregator")
const BASE_DIR = path.join(here, "artifacts", "base")
const STATE = path.join(process.env.MOA_STATE_DIR ?? path.join(process.cwd(), ".moa"), "experts")

/** sha256 of the base's weights file: the aggregator records the base it was trained on. */
export const baseFileHash = (baseDir = BASE_DIR): string => createHash("sha256").update(fs.readFileSync(path.join(baseDir, "model.safetensors"))).digest("hex")

/**
 * Whether an aggregator adapter has been trained on the current base (the cluster starts the
 * agent only then: after the base is retrained, the old aggregator cannot load on it).
 */
export const hasAggregator = (dir = AGGREGATOR_DIR, baseDir = BASE_DIR): boolean => {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(dir, "report.json"), "utf8")) as { baseSha256?: string }
    return fs.existsSync(path.join(dir, "adapter_config.json")) && r.baseSha256 === baseFileHash(baseDir)
  } catch {
    return false
  }
}

/** The longest answer (characters) the aggregator may have to write, per skill. */
export const ANSWER_CHARS: Record<SkillName, number> = { add: 5, reverse: 11, sort: 11, capital: 28, count: 3 }
const answerChars = (question: string): number => {
  const s = detectSkill(question.trim())
  return s ? ANSWER_CHARS[s] : 28
}

/** Candidates must not contain the separators of the internal prompt. */
const clean = (s: string): string => s.normalize("NFC").trim().replace(/\s+/g, " ").replace(/[|()]/g, "/")

/** Distinct candidates with their counts, most frequent first (ties: the one seen first); `text` as sent (normalised), `key` without separators. */
export const tally = (candidates: ReadonlyArray<string>): Array<{ text: string; key: string; n: number }> => {
  const m = new Map<string, { text: string; n: number; first: number }>()
  candidates.forEach((c, i) => {
    const key = clean(c)
    const t = m.get(key) ?? { text: c.normalize("NFC").trim().replace(/\s+/g, " "), n: 0, first: i }
    t.n++
    m.set(key, t)
  })
  return [...m].sort((a, b) => b[1].n - a[1].n || a[1].first - b[1].first).map(([key, t]) => ({ text: t.text, key, n: t.n }))
}

/** Tokens a text can take at most: one per character of the vocabulary, one per UTF-8 byte otherwise (byte fallback). */
const maxTokens = (s: string): number => Buffer.byteLength(s, "utf8")

/** What the model is shown, and the candidates it can pick by number (`shown[i]` is number i + 1). */
export interface AggregatorView {
  readonly prompt: string
  readonly shown: ReadonlyArray<string>
}

/**
 * The model's prompt: `question|1 cand(n)|2 cand(n)=` — numbered distinct candidates, most
 * supported first, as many as fit in `contextLength` tokens with room for the longest answer
 * (`<bos>` + prompt + `<sep>` + `0` + answer + `<eos>`; lengths counted in UTF-8 bytes, an upper
 * bound on the character tokenizer's tokens), at most 9. At least one candidate is kept (cut short
 * if it has to be).
 *
 * The model answers with the number of the candidate it picks (one token — the selection step of
 * Universal Self-Consistency), or `0` followed by an answer of its own when none is right;
 * `readAggregatorOutput` turns that back into the answer. A tiny character model learns to pick by
 * number in minutes, where learning to copy a candidate character by character did not (a LoRA on
 * the 2-layer skills base stayed at 0% on reverse after 250 steps).
 */
export const aggregatorView = (question: string, candidates: ReadonlyArray<string>, contextLength = 96): AggregatorView => {
  const budget = contextLength - 3 - 1 - answerChars(question) - 1 // bos, sep, eos; "0" + answer; "=" at the end
  let p = clean(question)
  while (maxTokens(p) > budget - 6) p = p.slice(0, -1)
  const shown: string[] = []
  for (const [i, c] of tally(candidates).slice(0, 9).entries()) {
    let part = `|${i + 1} ${c.key}(${Math.min(c.n, 9)})`
    if (maxTokens(p + part) > budget) {
      if (i > 0) break
      while (part.length > 4 && maxTokens(p + part) > budget) part = part.slice(0, -1)
    }
    p += part
    shown.push(c.text)
  }
  return { prompt: `${p}=`, shown }
}

/** The prompt alone (see aggregatorView). */
export const aggregatorModelPrompt = (question: string, candidates: ReadonlyArray<string>, contextLength = 96): string =>
  aggregatorView(question, candidates, contextLength).prompt

/** The training target for a view: the number of the right candidate, else `0` + the right answer. */
export const aggregatorTarget = (view: AggregatorView, answer: string): string => {
  const a = answer.normalize("NFC").trim().replace(/\s+/g, " ")
  const i = view.shown.indexOf(a)
  return i >= 0 ? String(i + 1) : `0${a}`
}

/** The model's output → the final answer: a candidate's number picks it, `0…` is the model's own answer. */
export const readAggregatorOutput = (view: AggregatorView, output: string): string => {
  const t = output.trim()
  const d = t.charCodeAt(0) - 48
  if (d >= 1 && d <= view.shown.length) return view.shown[d - 1]!
  if (d === 0) return t.slice(1).trim()
  return t
}

/** The wire prompt `"<question> | <c1> | … ="` → question and candidates (undefined if it is not one). */
export const parseWirePrompt = (prompt: string): { question: string; candidates: string[] } | undefined => {
  if (!prompt.endsWith(" =") || !prompt.includes(" | ")) return undefined
  const [question, ...candidates] = prompt.slice(0, -2).split(" | ")
  return { question: question!, candidates }
}

/**
 * The aggregator agent: the skills base with the aggregator adapter. Its `generate` takes the
 * router's aggregator prompt and answers the final answer (plain text).
 */
export const aggregatorExpert = (name = "aggregator", dir = AGGREGATOR_DIR): AgentDefinition => {
  // the base's context decides how many candidates fit
  const contextLength = (JSON.parse(fs.readFileSync(path.join(BASE_DIR, "config.json"), "utf8")) as { contextLength: number }).contextLength
  const def = defineExpert({
    name,
    model: BASE_DIR,
    adapters: { aggregator: dir },
    defaultAdapter: "aggregator",
    artifacts: path.join(STATE, name),
    description: "aggregator model: reads a question plus the experts' candidate answers, writes the final answer (LoRA on the skills base)",
    env: { OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? "1" },
  })
  const inner = def.handlers.generate as (req: GenerateRequest, ctx: unknown) => Promise<GenerateResponse>
  return {
    ...def,
    handlers: {
      ...def.handlers,
      generate: async (req: GenerateRequest, ctx: unknown) => {
        const p = parseWirePrompt(req.prompt)
        if (!p) throw moaError("BAD_REQUEST", `the aggregator expects "<question> | <candidate> | … =" (the router's aggregator prompt), got "${req.prompt.slice(0, 80)}"`, { field: "prompt" })
        const view = aggregatorView(p.question, p.candidates, contextLength)
        const r = await inner({ ...req, stream: false, prompt: view.prompt, maxTokens: Math.min(req.maxTokens ?? 64, answerChars(p.question) + 2) }, ctx)
        return { ...r, text: readAggregatorOutput(view, r.text) }
      },
    },
  } as AgentDefinition
}
