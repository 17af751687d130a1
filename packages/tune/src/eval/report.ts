/**
 * Evaluation results and the markdown report that compares several models or adapters on the
 * same sets: exact match per task and overall, loss and perplexity.
 */

export interface Scored {
  readonly task: string
  readonly question: string
  readonly expected: string
  readonly got: string
  readonly correct: boolean
}

export interface EvalResult {
  /** Which model or adapter. */
  readonly name: string
  readonly n: number
  readonly accuracy: number
  readonly perTask: Record<string, { n: number; correct: number; accuracy: number }>
  /** Mean token negative log-likelihood of the reference completions, when measured. */
  readonly loss?: number
  readonly perplexity?: number
  readonly samples?: ReadonlyArray<Scored>
}

/** Exact match after trimming (SKILLS.md), aggregated overall and per task. */
export const scoreAnswers = (name: string, items: ReadonlyArray<Omit<Scored, "correct">>, extra: { loss?: number } = {}): EvalResult => {
  const perTask: Record<string, { n: number; correct: number; accuracy: number }> = {}
  let correct = 0
  const scored: Scored[] = items.map((it) => {
    const ok = it.expected.trim() === it.got.trim()
    const t = (perTask[it.task] ??= { n: 0, correct: 0, accuracy: 0 })
    t.n++
    if (ok) {
      t.correct++
      correct++
    }
    return { ...it, correct: ok }
  })
  for (const t of Object.values(perTask)) t.accuracy = t.n ? t.correct / t.n : 0
  return {
    name,
    n: items.length,
    accuracy: items.length ? correct / items.length : 0,
    perTask,
    ...(extra.loss !== undefined ? { loss: extra.loss, perplexity: Math.exp(extra.loss) } : {}),
    samples: scored,
  }
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`

/**
 * One row per model/adapter, one column per task (accuracy, with n in the header), then overall,
 * loss and perplexity. `extra` adds columns such as trainable parameters or size on disk.
 */
export const compareMarkdown = (results: ReadonlyArray<EvalResult>, extra: Record<string, Record<string, string>> = {}): string => {
  const tasks = [...new Set(results.flatMap((r) => Object.keys(r.perTask)))].sort()
  const extraCols = [...new Set(Object.values(extra).flatMap((e) => Object.keys(e)))]
  const nOf = (t: string) => {
    const ns = [...new Set(results.map((r) => r.perTask[t]?.n).filter((n) => n !== undefined))]
    return ns.length === 1 ? ` (n=${ns[0]})` : ""
  }
  const hasLoss = results.some((r) => r.loss !== undefined)
  const head = ["model", ...tasks.map((t) => `${t}${nOf(t)}`), "overall", ...(hasLoss ? ["loss", "perplexity"] : []), ...extraCols]
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`]
  for (const r of results) {
    const row = [
      r.name,
      ...tasks.map((t) => (r.perTask[t] ? pct(r.perTask[t]!.accuracy) : "–")),
      pct(r.accuracy),
      ...(hasLoss ? [r.loss !== undefined ? r.loss.toFixed(4) : "–", r.perplexity !== undefined ? r.perplexity.toFixed(3) : "–"] : []),
      ...extraCols.map((c) => extra[r.name]?.[c] ?? "–"),
    ]
    lines.push(`| ${row.join(" | ")} |`)
  }
  return lines.join("\n") + "\n"
}

/** Wrong answers for a quick look (first `k` per task). */
export const errorsMarkdown = (r: EvalResult, k = 3): string => {
  const byTask = new Map<string, Scored[]>()
  for (const s of r.samples ?? []) if (!s.correct) byTask.set(s.task, [...(byTask.get(s.task) ?? []), s])
  const lines = [`| task | question | expected | got |`, `|---|---|---|---|`]
  for (const [t, ss] of [...byTask].sort()) for (const s of ss.slice(0, k)) lines.push(`| ${t} | \`${s.question}\` | \`${s.expected}\` | \`${s.got}\` |`)
  return lines.join("\n") + "\n"
}
