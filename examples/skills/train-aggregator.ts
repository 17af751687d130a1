/**
 * Train the skills cluster's aggregator model (see aggregator.ts): a LoRA adapter on the shared
 * skills base that reads a question plus the experts' candidate answers and writes the final one.
 *
 *   npm run train:aggregator                            # ~5 minutes of training, then a quick report
 *   npm run train:aggregator -- --minutes 6 --per-skill 300
 *
 * Steps (all in this process, on the committed artifacts: base, the five skill adapters, the gate):
 *   1. candidate sets the cluster produces, for training questions of every skill:
 *        moa      — the greedy answers of the gate's top-k experts (what `moa` mode's layer 0 gets)
 *        self-moa — `samples` answers of the gate's top-1 expert at each temperature T (what `self-moa` gets)
 *      Each expert answers exactly as in the cluster: the same base + adapter, the skill's own
 *      prompt format inside, the plain answer out (cluster.ts modelPrompt / userAnswer).
 *   2. rows: prompt = the router's aggregator prompt over a set (moa's in the gate's order, best
 *      expert first, as the router sends them; self-moa's via `buildAggregatorDataset` in two
 *      shuffled orders), target = the right answer, in the model's compact prompt form; sets with
 *      no right candidate kept at `keepAllWrong` (10%: some correcting, mostly picking).
 *      The target is what the model writes: the number of the right candidate, or 0 + the answer.
 *   3. LoRA (r 16, all linear layers) on the base with answer-only loss, for `minutes`.
 *   4. held-out report: on new questions' candidate sets, vote vs best-of-n (reward) vs the model.
 * Writes <artifacts>/aggregator/ (adapter_config.json, adapter_model.safetensors, report.json).
 *
 * For examples/skills/train.ts: `await trainAggregator({ artifacts: out, minutes })` after the
 * gate step (it needs the base, the adapters and the gate it trained).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { initBackend, loadCheckpoint, generate, encodeExample, train as trainModel, type GPT, type Tokenizer } from "@moa/model"
import { Adapter, baseFingerprint } from "@moa/tune"
import { SKILLS, generate as skillQuestions, allCapitals, toPrompt, parse, reward, maxCompletionLength, type SkillName, type Example } from "@moa/skills"
import { Gate, featuresFromSpec, buildAggregatorDataset, formatAggregatorPrompt, parseAggregatorPrompt, weightedVote, normalizeAnswer, type CandidateSet } from "@moa/router"
import { aggregatorView, aggregatorTarget, readAggregatorOutput, baseFileHash, ANSWER_CHARS } from "./aggregator.ts"

const here = path.dirname(fileURLToPath(import.meta.url))
const EXPERTS = [...SKILLS, "base"] as const
/** Completion tokens an expert's answer can need (+ the end marker), as train.ts evaluates. */
const MAX_NEW = Object.fromEntries(SKILLS.map((s) => [s, maxCompletionLength(s) + 2])) as Record<SkillName, number>

export interface TrainAggregatorOptions {
  /** Folder with base/, adapters/<skill>/, gate/ (default examples/skills/artifacts). */
  readonly artifacts?: string
  /** Where the adapter goes (default <artifacts>/aggregator). */
  readonly out?: string
  /** Training questions per skill (capital: a spread sample of the facts) (default 200). */
  readonly perSkill?: number
  /** Held-out questions per skill for the report (default 40; 0 = no report). */
  readonly evalPerSkill?: number
  /** moa proposers: the gate's top-k (default 3). */
  readonly k?: number
  /** self-moa samples per question, at each of these temperatures (default 5 at 0.3 and at 0.8). */
  readonly samples?: number
  readonly temperatures?: ReadonlyArray<number>
  /** Share of the sets with no right candidate that are kept (the model must then correct, not pick) (default 0.1). */
  readonly keepAllWrong?: number
  /** Training budget in minutes (default 5). */
  readonly minutes?: number
  /** Rows per step and learning rate of the LoRA training (default 32 and 5e-3). */
  readonly batchSize?: number
  readonly lr?: number
  readonly seed?: number
  readonly log?: (line: string) => void
}

export interface AggregatorScores {
  readonly n: number
  readonly vote: number
  readonly bestOfN: number
  readonly model: number
  /** Share of sets with at least one right candidate (the ceiling for picking one). */
  readonly anyRight: number
}

export interface TrainAggregatorResult {
  readonly out: string
  readonly rows: number
  readonly steps: number
  readonly finalLoss: number
  readonly seconds: number
  /** Held-out, per set kind (moa / self-moa) and skill. */
  readonly report: Record<string, Record<string, AggregatorScores>>
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`

const modelPrompt = (q: string): string => {
  try {
    return toPrompt(q.trim())
  } catch {
    return `${q.trim()}=`
  }
}
const userAnswer = (q: string, completion: string): string => {
  try {
    return parse(q.trim(), completion)
  } catch {
    return completion.trim()
  }
}

/** Questions per skill; capital: every `step`-th fact question (odd step: both forms), train and test disjoint. */
const questionsFor = (n: number, split: "train" | "test", seed: number): Example[] =>
  SKILLS.flatMap((s) => {
    if (s !== "capital") return skillQuestions(s, { n, seed, split, unique: true })
    const caps = allCapitals()
    const step = Math.max(3, Math.floor(caps.length / n)) | 1
    return caps.filter((_, i) => i % step === (split === "test" ? 1 : 0)).slice(0, n)
  })

interface Produced {
  readonly moa: CandidateSet & { weights: number[] }
  /** One set per sampling temperature. */
  readonly selfMoa: CandidateSet[]
}

/**
 * The candidate sets the cluster's experts produce for `questions` (see the file comment): run
 * with each expert's adapter attached in turn, batched.
 */
const produceCandidates = async (
  model: GPT,
  tok: Tokenizer,
  adapters: Record<string, string>,
  gate: Gate,
  features: Awaited<ReturnType<typeof featuresFromSpec>>,
  questions: ReadonlyArray<Example>,
  o: { k: number; samples: number; temperatures: ReadonlyArray<number>; seed: number },
): Promise<Produced[]> => {
  const probs = gate.probs(await features.extract(questions.map((q) => q.question)))
  const E = gate.experts
  const ranked = probs.map((p) => [...p.keys()].sort((a, b) => p[b]! - p[a]!))
  const topK = ranked.map((r) => r.slice(0, o.k).map((i) => E[i]!))
  const greedy: Array<Record<string, string>> = questions.map(() => ({}))
  const sampled: string[][][] = questions.map(() => o.temperatures.map(() => []))
  const BATCH = 64
  const run = (idx: number[], temperature: number, seed: number): string[] => {
    const out: string[] = []
    for (let i = 0; i < idx.length; i += BATCH) {
      const part = idx.slice(i, i + BATCH)
      const maxTokens = Math.max(...part.map((j) => MAX_NEW[questions[j]!.skill]))
      const gens = generate(model, tok, part.map((j) => modelPrompt(questions[j]!.question)), { maxTokens, temperature, seed: seed + i })
      gens.forEach((g, m) => out.push(normalizeAnswer(userAnswer(questions[part[m]!]!.question, g.text))))
    }
    return out
  }
  for (const e of E) {
    const wantGreedy = questions.map((_, i) => i).filter((i) => topK[i]!.includes(e))
    const wantSamples = questions.map((_, i) => i).filter((i) => topK[i]![0] === e)
    if (wantGreedy.length === 0 && wantSamples.length === 0) continue
    const a = adapters[e] ? Adapter.load(adapters[e]!, model) : undefined
    a?.attach(model)
    try {
      run(wantGreedy, 0, o.seed).forEach((t, m) => (greedy[wantGreedy[m]!]![e] = t))
      o.temperatures.forEach((T, ti) => {
        for (let s = 0; s < o.samples; s++) run(wantSamples, T, o.seed * 1000 + s * 7919 + ti * 104729).forEach((t, m) => sampled[wantSamples[m]!]![ti]!.push(t))
      })
    } finally {
      a?.detach()
      a?.dispose()
    }
  }
  return questions.map((q, i) => {
    const chosen = topK[i]!
    const p = chosen.map((e) => probs[i]![E.indexOf(e)]!)
    const sum = p.reduce((x, y) => x + y, 0)
    return {
      moa: { question: q.question, answer: q.answer, candidates: chosen.map((e) => greedy[i]![e]!), weights: p.map((x) => x / sum) },
      selfMoa: sampled[i]!.map((candidates) => ({ question: q.question, answer: q.answer, candidates })),
    }
  })
}

/** Train the aggregator adapter; returns where it went and the held-out report. */
export async function trainAggregator(o: TrainAggregatorOptions = {}): Promise<TrainAggregatorResult> {
  const t0 = Date.now()
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`))
  const artifacts = path.resolve(o.artifacts ?? path.join(here, "artifacts"))
  const out = path.resolve(o.out ?? path.join(artifacts, "aggregator"))
  const perSkill = o.perSkill ?? 200
  const evalPerSkill = o.evalPerSkill ?? 40
  const k = o.k ?? 3
  const samples = o.samples ?? 5
  const temperatures = o.temperatures ?? [0.3, 0.8]
  const minutes = o.minutes ?? 5
  const batchSize = o.batchSize ?? 32
  const keepAllWrong = o.keepAllWrong ?? 0.1
  if (!(keepAllWrong >= 0 && keepAllWrong <= 1)) throw new Error(`keepAllWrong must be in 0..1, got ${keepAllWrong}`)
  const lr = o.lr ?? 5e-3
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new Error(`batchSize must be a positive integer, got ${batchSize}`)
  if (!(lr > 0 && lr < 1)) throw new Error(`lr must be in (0, 1), got ${lr}`)
  const seed = o.seed ?? 1
  if (!(Number.isInteger(perSkill) && perSkill > 0)) throw new Error(`perSkill must be a positive integer, got ${perSkill}`)
  if (!(Number.isInteger(evalPerSkill) && evalPerSkill >= 0)) throw new Error(`evalPerSkill must be an integer ≥ 0, got ${evalPerSkill}`)
  if (!(Number.isInteger(k) && k >= 1 && k <= EXPERTS.length)) throw new Error(`k must be an integer in 1..${EXPERTS.length}, got ${k}`)
  if (!(Number.isInteger(samples) && samples >= 1 && samples <= 9)) throw new Error(`samples must be an integer in 1..9, got ${samples}`)
  if (temperatures.length === 0 || !temperatures.every((t) => t > 0 && t <= 10)) throw new Error(`temperatures must be numbers in (0, 10], got [${temperatures.join(", ")}]`)
  if (!(minutes > 0)) throw new Error(`minutes must be > 0, got ${minutes}`)
  for (const f of ["base/config.json", "gate/gate.json", ...SKILLS.map((s) => `adapters/${s}/adapter_config.json`)])
    if (!fs.existsSync(path.join(artifacts, f))) throw new Error(`${path.join(artifacts, f)} is missing: train the base, the adapters and the gate first (npm run train:skills)`)

  const backend = await initBackend(undefined)
  log(`aggregator: backend ${backend.name}`)
  const { model, tokenizer: tok } = loadCheckpoint(path.join(artifacts, "base"))
  const fingerprint = baseFingerprint(model)
  const meta = JSON.parse(fs.readFileSync(path.join(artifacts, "gate", "gate.json"), "utf8"))
  const gate = Gate.fromSafetensors(meta.config, new Uint8Array(fs.readFileSync(path.join(artifacts, "gate", "gate.safetensors"))))
  const features = featuresFromSpec(meta.config.features)
  const adapters = Object.fromEntries(SKILLS.map((s) => [s, path.join(artifacts, "adapters", s)]))
  const ctx = model.config.contextLength
  const internal = (wirePrompt: string, answer: string) => {
    const p = parseAggregatorPrompt(wirePrompt)!
    const view = aggregatorView(p.question, p.candidates, ctx)
    return { prompt: view.prompt, completion: aggregatorTarget(view, answer) }
  }

  // 1. candidate sets from the experts
  let t = Date.now()
  const trainQs = questionsFor(perSkill, "train", seed)
  const produced = await produceCandidates(model, tok, adapters, gate, features, trainQs, { k, samples, temperatures, seed })
  const sets = produced.flatMap((p) => [p.moa, ...p.selfMoa])
  const right = (s: CandidateSet) => s.candidates.some((c) => c === normalizeAnswer(s.answer))
  log(`aggregator: ${sets.length} candidate sets from ${trainQs.length} training questions in ${((Date.now() - t) / 1000).toFixed(0)} s (${pct(sets.filter(right).length / sets.length)} with a right candidate)`)

  // 2. rows, all-wrong sets kept. moa's candidates arrive in the gate's order (best expert first),
  // which is information, so they keep it; self-moa's samples are exchangeable: two shuffled orders
  // Sets where no candidate is right are kept only at `keepAllWrong` (default 0.1): on this base
  // they are mostly add and capital questions nobody can answer, and a model asked to invent
  // those answers learns little else (with all of them kept the loss stayed at ~2.2 nats a token)
  let r0 = seed >>> 0
  const keep = (s: CandidateSet) => right(s) || ((r0 = (Math.imul(r0, 1664525) + 1013904223) >>> 0) / 4294967296 < keepAllWrong)
  const wire = [
    ...produced.filter((p) => keep(p.moa)).map((p) => ({ prompt: formatAggregatorPrompt(p.moa.question, p.moa.candidates), completion: normalizeAnswer(p.moa.answer) })),
    ...buildAggregatorDataset(produced.flatMap((p) => p.selfMoa), { orders: 2, seed, keepAllWrong }),
  ]
  const encoded = wire.map((r) => encodeExample(tok, internal(r.prompt, r.completion)))
  const rows = encoded.filter((r) => r.ids.length <= ctx)
  if (rows.length < encoded.length) log(`aggregator: dropped ${encoded.length - rows.length} rows longer than the model's context (${ctx})`)

  // 3. LoRA on the base, answer-only loss
  t = Date.now()
  const adapter = Adapter.create(model, { r: 16, alpha: 32, targetModules: ["all"], seed }, { name: "skills-base", fingerprint })
  adapter.attach(model)
  adapter.training = true
  const budget = minutes * 60
  let lastLog = 0
  const r = await trainModel({
    model,
    train: rows,
    trainable: adapter.variables(),
    config: { steps: 100_000, batchSize, lr, warmupSteps: 20, schedule: "constant", weightDecay: 0, maxSeconds: budget, seed },
    onProgress: (p) => {
      if (Date.now() - lastLog > 30_000) {
        lastLog = Date.now()
        log(`aggregator: step ${p.step} loss ${p.loss.toFixed(4)} | ${Math.round(p.tokensPerSec)} tok/s | ${Math.round(p.elapsedSec)}/${Math.round(budget)} s`)
      }
    },
  })
  adapter.training = false
  fs.rmSync(out, { recursive: true, force: true })
  adapter.save(out)
  log(`aggregator: ${rows.length} rows, ${r.steps} steps in ${((Date.now() - t) / 1000).toFixed(0)} s, final loss ${r.finalLoss.toFixed(4)} → ${out}`)

  // 4. held-out: the three aggregators on the same candidate sets
  const report: TrainAggregatorResult["report"] = {}
  if (evalPerSkill > 0) {
    adapter.detach()
    const testQs = questionsFor(evalPerSkill, "test", seed + 1000)
    const heldOut = await produceCandidates(model, tok, adapters, gate, features, testQs, { k, samples, temperatures, seed: seed + 1000 })
    adapter.attach(model)
    for (const kind of ["moa", ...temperatures.map((T) => `self-moa T=${T}`)]) {
      const ti = kind === "moa" ? -1 : temperatures.findIndex((T) => kind === `self-moa T=${T}`)
      const ss = heldOut.map((p) => (ti < 0 ? p.moa : { ...p.selfMoa[ti]!, weights: p.selfMoa[ti]!.candidates.map(() => 1) }))
      const views = ss.map((s) => aggregatorView(s.question, s.candidates, ctx))
      const answers: string[] = []
      for (let i = 0; i < views.length; i += 64) {
        const maxTokens = Math.max(...testQs.slice(i, i + 64).map((q) => ANSWER_CHARS[q.skill] + 2))
        const gens = generate(model, tok, views.slice(i, i + 64).map((v) => v.prompt), { maxTokens, temperature: 0 })
        answers.push(...gens.map((g, m) => normalizeAnswer(readAggregatorOutput(views[i + m]!, g.text))))
      }
      report[kind] = {}
      for (const s of [...SKILLS, "mixed"]) {
        const idx = ss.map((_, i) => i).filter((i) => s === "mixed" || testQs[i]!.skill === s)
        const acc = (f: (i: number) => string) => idx.filter((i) => f(i) === normalizeAnswer(ss[i]!.answer)).length / idx.length
        report[kind]![s] = {
          n: idx.length,
          vote: acc((i) => weightedVote(ss[i]!.candidates.map((text, j) => ({ expert: "", text, weight: ss[i]!.weights[j]! }))).answer),
          bestOfN: acc((i) => {
            const sc = ss[i]!.candidates.map((c) => {
              try {
                return reward(ss[i]!.question, c)
              } catch {
                return 0
              }
            })
            return ss[i]!.candidates[sc.indexOf(Math.max(...sc))]!
          }),
          model: acc((i) => answers[i]!),
          anyRight: idx.filter((i) => right(ss[i]!)).length / idx.length,
        }
      }
      log(`\naggregators on held-out ${kind} candidate sets (${evalPerSkill} questions per skill, in-process)\n`)
      log(`| aggregator | mixed | ${SKILLS.join(" | ")} |\n|---|---|${SKILLS.map(() => "---").join("|")}|`)
      for (const [name, key] of [["vote", "vote"], ["best-of-n (reward)", "bestOfN"], ["aggregator model", "model"], ["any candidate right", "anyRight"]] as const)
        log(`| ${name} | ${[ "mixed", ...SKILLS].map((s) => pct(report[kind]![s]![key])).join(" | ")} |`)
    }
  }
  adapter.detach()
  adapter.dispose()
  model.dispose()
  gate.dispose()
  const seconds = (Date.now() - t0) / 1000
  fs.writeFileSync(
    path.join(out, "report.json"),
    JSON.stringify({ date: new Date().toISOString(), baseSha256: baseFileHash(path.join(artifacts, "base")), perSkill, evalPerSkill, k, samples, temperatures, minutes, batchSize, lr, keepAllWrong, backend: backend.name, rows: rows.length, steps: r.steps, finalLoss: r.finalLoss, seconds, report }, null, 2) + "\n",
  )
  log(`aggregator: done in ${seconds.toFixed(0)} s`)
  return { out, rows: rows.length, steps: r.steps, finalLoss: r.finalLoss, seconds, report }
}

// ---------------------------------------------------------------- command line
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      artifacts: { type: "string" },
      out: { type: "string" },
      "per-skill": { type: "string", default: "200" },
      eval: { type: "string", default: "40" },
      k: { type: "string", default: "3" },
      samples: { type: "string", default: "5" },
      temperatures: { type: "string", default: "0.3,0.8" },
      minutes: { type: "string", default: "5" },
      batch: { type: "string", default: "32" },
      lr: { type: "string", default: "5e-3" },
      "keep-all-wrong": { type: "string", default: "0.1" },
      seed: { type: "string", default: "1" },
    },
  })
  trainAggregator({
    artifacts: values.artifacts,
    out: values.out,
    perSkill: Number(values["per-skill"]),
    evalPerSkill: Number(values.eval),
    k: Number(values.k),
    samples: Number(values.samples),
    temperatures: (values.temperatures ?? "").split(",").filter(Boolean).map(Number),
    minutes: Number(values.minutes),
    batchSize: Number(values.batch),
    lr: Number(values.lr),
    keepAllWrong: Number(values["keep-all-wrong"]),
    seed: Number(values.seed),
  }).catch((e) => {
    process.stderr.write(`train:aggregator: ${(e as Error).message}\n`)
    process.exit(2)
  })
}
