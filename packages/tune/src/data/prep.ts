/**
 * Dataset preparation after reading: de-duplication, stratified train/validation/test splits,
 * imbalance handling (oversampling and loss weights per task or label) and a dataset report.
 */
import { rng } from "@moa/model"
import type { DataRecord } from "./jsonl.ts"

/** The model's seeded PRNG (mulberry32), so that splits and oversampling are reproducible from a seed. */
export const seededRng: (seed: number) => () => number = rng
const shuffled = <A>(xs: ReadonlyArray<A>, rng: () => number): A[] => {
  const out = xs.slice()
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1))
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}

/** The identity of a record's content (its shape and text fields, not its line or task). */
export const recordKey = (r: DataRecord): string => {
  const { line: _l, task: _t, ...content } = r as DataRecord & { task?: string }
  return JSON.stringify(content)
}

/** Keep the first of each identical record; report how many were dropped. */
export const dedupe = <R extends DataRecord>(records: ReadonlyArray<R>): { records: R[]; dropped: number } => {
  const seen = new Set<string>()
  const out: R[] = []
  for (const r of records) {
    const k = recordKey(r)
    if (seen.has(k)) continue
    seen.add(k)
    out.push(r)
  }
  return { records: out, dropped: records.length - out.length }
}

/** The stratum of a record: its task, or its label for unpaired records, or "all". */
export type StratifyBy = "task" | "label" | "none"
export const stratumOf = (r: DataRecord, by: StratifyBy): string => {
  if (by === "task") return r.task ?? "(no task)"
  if (by === "label") return r.shape === "unpaired" ? String(r.label) : "(no label)"
  return "all"
}

export interface SplitOptions {
  /** Fractions of each stratum for validation and test (the rest is train). Default 0.1 / 0.1. */
  readonly validation?: number
  readonly test?: number
  readonly stratifyBy?: StratifyBy
  readonly seed?: number
}
export interface Splits<R> {
  readonly train: R[]
  readonly validation: R[]
  readonly test: R[]
}

/**
 * Split each stratum separately with the same fractions, so every task (or label) keeps its
 * share in every split. A stratum with at least 3 records gets at least one of each.
 */
export const splitDataset = <R extends DataRecord>(records: ReadonlyArray<R>, opts: SplitOptions = {}): Splits<R> => {
  const fv = opts.validation ?? 0.1
  const ft = opts.test ?? 0.1
  if (fv < 0 || ft < 0 || fv + ft >= 1) throw new Error(`splitDataset: validation (${fv}) and test (${ft}) fractions must be ≥ 0 and sum to less than 1`)
  const by = opts.stratifyBy ?? "task"
  const rng = seededRng(opts.seed ?? 0)
  const groups = new Map<string, R[]>()
  for (const r of records) {
    const k = stratumOf(r, by)
    const g = groups.get(k)
    if (g) g.push(r)
    else groups.set(k, [r])
  }
  const out: Splits<R> = { train: [], validation: [], test: [] }
  for (const key of [...groups.keys()].sort()) {
    const g = shuffled(groups.get(key)!, rng)
    let nv = Math.round(g.length * fv)
    let nt = Math.round(g.length * ft)
    if (g.length >= 3) {
      if (fv > 0) nv = Math.max(1, nv)
      if (ft > 0) nt = Math.max(1, nt)
    }
    out.validation.push(...g.slice(0, nv))
    out.test.push(...g.slice(nv, nv + nt))
    out.train.push(...g.slice(nv + nt))
  }
  return { train: shuffled(out.train, rng), validation: out.validation, test: out.test }
}

/** Repeat records of smaller strata (sampling with replacement) until every stratum is as large as the largest. */
export const oversample = <R extends DataRecord>(records: ReadonlyArray<R>, by: StratifyBy = "task", seed = 0): R[] => {
  const rng = seededRng(seed)
  const groups = new Map<string, R[]>()
  for (const r of records) {
    const k = stratumOf(r, by)
    groups.set(k, [...(groups.get(k) ?? []), r])
  }
  const max = Math.max(...[...groups.values()].map((g) => g.length))
  const out: R[] = []
  for (const g of groups.values()) {
    out.push(...g)
    for (let i = g.length; i < max; i++) out.push(g[Math.floor(rng() * g.length)]!)
  }
  return shuffled(out, rng)
}

/**
 * Loss weight per stratum, inversely proportional to its frequency and normalised so the
 * average weight over records is 1 (the "balanced" class weights of scikit-learn).
 * `explicit` overrides the computed weight of any named stratum.
 */
export const lossWeights = (records: ReadonlyArray<DataRecord>, by: StratifyBy = "task", explicit: Record<string, number> = {}): Map<string, number> => {
  const counts = new Map<string, number>()
  for (const r of records) counts.set(stratumOf(r, by), (counts.get(stratumOf(r, by)) ?? 0) + 1)
  const k = counts.size
  const w = new Map<string, number>()
  for (const [s, c] of counts) w.set(s, explicit[s] ?? records.length / (k * c))
  return w
}

export interface LengthStats {
  readonly min: number
  readonly mean: number
  readonly max: number
}
export interface DatasetReport {
  readonly file: string
  readonly shape: string
  readonly records: number
  readonly duplicatesDropped: number
  readonly tasks: Record<string, number>
  readonly promptLength: LengthStats
  readonly completionLength: LengthStats
  readonly splits?: { train: number; validation: number; test: number }
  /** What lengths are measured in. */
  readonly unit: "tokens" | "characters"
}

const stats = (xs: number[]): LengthStats =>
  xs.length === 0 ? { min: 0, mean: 0, max: 0 } : { min: Math.min(...xs), mean: xs.reduce((a, b) => a + b, 0) / xs.length, max: Math.max(...xs) }

/** Counts, lengths (tokens when `encode` is given, else characters), tasks and duplicates dropped. */
export const datasetReport = (
  file: string,
  records: ReadonlyArray<DataRecord>,
  duplicatesDropped: number,
  opts: { encode?: (s: string) => ReadonlyArray<number>; splits?: Splits<DataRecord> } = {},
): DatasetReport => {
  const len = (s: string) => (opts.encode ? opts.encode(s).length : [...s].length)
  const tasks: Record<string, number> = {}
  const p: number[] = []
  const c: number[] = []
  for (const r of records) {
    const t = r.task ?? "(no task)"
    tasks[t] = (tasks[t] ?? 0) + 1
    switch (r.shape) {
      case "chat":
        p.push(len(r.messages.slice(0, -1).map((m) => m.content).join("")))
        c.push(len(r.messages[r.messages.length - 1]!.content))
        break
      case "preference":
        p.push(len(r.prompt))
        c.push(len(r.chosen), len(r.rejected))
        break
      case "prompt":
        p.push(len(r.prompt))
        break
      default:
        p.push(len(r.prompt))
        c.push(len(r.completion))
    }
  }
  return {
    file,
    shape: records[0]?.shape ?? "empty",
    records: records.length,
    duplicatesDropped,
    tasks,
    promptLength: stats(p),
    completionLength: stats(c),
    ...(opts.splits ? { splits: { train: opts.splits.train.length, validation: opts.splits.validation.length, test: opts.splits.test.length } } : {}),
    unit: opts.encode ? "tokens" : "characters",
  }
}

export const reportMarkdown = (r: DatasetReport): string => {
  const f = (s: LengthStats) => `${s.min} / ${s.mean.toFixed(1)} / ${s.max}`
  const lines = [
    `### Dataset \`${r.file}\``,
    "",
    `| | |`,
    `|---|---|`,
    `| shape | ${r.shape} |`,
    `| records (after de-duplication) | ${r.records} |`,
    `| duplicates dropped | ${r.duplicatesDropped} |`,
    `| prompt length (${r.unit}) min / mean / max | ${f(r.promptLength)} |`,
    `| completion length (${r.unit}) min / mean / max | ${f(r.completionLength)} |`,
  ]
  if (r.splits) lines.push(`| train / validation / test | ${r.splits.train} / ${r.splits.validation} / ${r.splits.test} |`)
  lines.push("", "| task | records |", "|---|---|")
  for (const [t, n] of Object.entries(r.tasks).sort()) lines.push(`| ${t} | ${n} |`)
  return lines.join("\n") + "\n"
}
