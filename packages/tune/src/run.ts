/**
 * The pipeline behind `moa tune`: stages 1–5 of the survey in one call.
 *   1. data: read + validate JSONL, check lengths against the context, de-duplicate, split
 *      stratified by task, optional oversampling / per-task loss weights, dataset report;
 *   2. model initialisation: load the base checkpoint, attach the adapter (or choose the
 *      variables for full fine-tuning / HFT);
 *   3–4. training set-up and fine-tuning (sft.ts);
 *   5. evaluation: base vs tuned on the test split (exact match per task, loss, perplexity),
 *      report.md, train_log.jsonl and loss.svg.
 * Output: an adapter folder in PEFT's layout (lora, dora, qlora) or a full checkpoint (full,
 * hft), written atomically; the logs and reports go next to it in the same folder.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs"
import { type BackendName, type GPT, type Tokenizer, generate, initBackend, loadCheckpoint, saveCheckpoint } from "@moa/model"
import { type DataRecord, DataError, checkLengths, readJsonl, trainingPairs } from "./data/jsonl.ts"
import { type StratifyBy, datasetReport, dedupe, lossWeights, oversample, reportMarkdown, splitDataset } from "./data/prep.ts"
import { Adapter, adapterSizeOnDisk, baseFingerprint } from "./peft/adapter.ts"
import { hftTrainable } from "./peft/hft.ts"
import type { QuantBits } from "./peft/quant.ts"
import { type SftExample, type TrainLogEntry, evalLoss, train } from "./sft.ts"
import { type EvalResult, compareMarkdown, scoreAnswers } from "./eval/report.ts"
import { lossCurveSvg, seriesFromLog } from "./eval/plot.ts"

export type TuneMethod = "full" | "lora" | "dora" | "qlora" | "hft"
export const TUNE_METHODS: ReadonlyArray<TuneMethod> = ["full", "lora", "dora", "qlora", "hft"]

export interface TuneRunOptions {
  readonly method: TuneMethod
  /** base checkpoint folder (config.json + model.safetensors + tokenizer.json) */
  readonly base: string
  readonly data: string
  readonly out: string
  readonly steps?: number
  readonly batchSize?: number
  readonly lr?: number
  readonly warmup?: number
  readonly seed?: number
  readonly r?: number
  readonly alpha?: number
  readonly dropout?: number
  readonly rslora?: boolean
  readonly targets?: ReadonlyArray<string>
  readonly bits?: QuantBits
  /**
   * HFT: which fine-tuning stage this job is (0, 1, 2…). As in the paper, one stage trains one
   * half of each category for the whole job; the next stage (the next skill, or the next
   * preference round) draws another half. Default 0.
   */
  readonly hftStage?: number
  /** HFT: re-draw the half every this many steps inside the job (default: never — one half per stage) */
  readonly hftRound?: number
  readonly validation?: number
  readonly test?: number
  readonly stratifyBy?: StratifyBy
  readonly oversample?: boolean
  /** "balanced" (inverse frequency) or explicit weights per task */
  readonly taskWeights?: "balanced" | Record<string, number>
  readonly backend?: BackendName
  readonly onStep?: (step: number, steps: number, loss: number) => void
  readonly log?: (line: string) => void
}

export interface TuneRunResult {
  readonly out: string
  readonly method: TuneMethod
  readonly backend: string
  readonly trainableParams: number
  readonly totalParams: number
  readonly bytesOnDisk: number
  /** qlora: the target weights in float32 vs quantised, and all tensor memory (tf.memory) before and after attaching */
  readonly quantizedMemory?: { float32Bytes: number; quantizedBytes: number; tensorBytesBefore?: number; tensorBytesAfter?: number }
  readonly before: EvalResult
  readonly after: EvalResult
  readonly log: TrainLogEntry[]
  readonly seconds: number
}

/** Read, validate and prepare a dataset for a model: errors name file, line and field. */
export const prepareData = (file: string, tok: Tokenizer, contextLength: number, o: { validation?: number; test?: number; stratifyBy?: StratifyBy; seed?: number; oversample?: boolean } = {}) => {
  const records = readJsonl(file)
  const shape = records[0]!.shape
  if (shape === "prompt") throw new DataError({ file, message: "prompt-only records have nothing to learn from in supervised fine-tuning; use prompt/completion, messages, chosen/rejected or label data" })
  checkLengths(records, file, (s) => tok.encode(s), contextLength)
  const { records: unique, dropped } = dedupe(records)
  const splits = splitDataset(unique, { validation: o.validation ?? 0.1, test: o.test ?? 0.1, stratifyBy: o.stratifyBy ?? "task", seed: o.seed ?? 0 })
  const trainRecs = o.oversample ? oversample(splits.train, o.stratifyBy ?? "task", o.seed ?? 0) : splits.train
  const toEx = (rs: ReadonlyArray<DataRecord>): SftExample[] =>
    rs.flatMap((r) => {
      const p = trainingPairs(r)
      return p ? [{ ...p, ...(r.task !== undefined ? { task: r.task } : {}) }] : []
    })
  const report = datasetReport(file, unique, dropped, { encode: (s) => tok.encode(s), splits })
  return { records: unique, splits, train: toEx(trainRecs), validation: toEx(splits.validation), test: toEx(splits.test), report, trainRecords: trainRecs }
}

/** Greedy exact match per task + completion loss, on prompt/completion examples. */
export const evaluateExamples = (name: string, model: GPT, tok: Tokenizer, examples: ReadonlyArray<SftExample>, maxTokens?: number): EvalResult => {
  if (examples.length === 0) return scoreAnswers(name, [])
  const mt = maxTokens ?? Math.max(1, ...examples.map((e) => tok.encode(e.completion).length + 1))
  const outs: string[] = []
  for (let i = 0; i < examples.length; i += 64)
    outs.push(...generate(model, tok, examples.slice(i, i + 64).map((e) => e.prompt), { maxTokens: mt, temperature: 0 }).map((g) => g.text))
  const items = examples.map((e, i) => ({ task: e.task ?? "(no task)", question: e.prompt, expected: e.completion, got: outs[i]! }))
  return scoreAnswers(name, items, { loss: evalLoss(model, tok, examples).loss })
}

export const runTune = async (o: TuneRunOptions): Promise<TuneRunResult> => {
  if (!TUNE_METHODS.includes(o.method)) throw new Error(`unknown method "${o.method}": use one of ${TUNE_METHODS.join(", ")}`)
  if (o.hftStage !== undefined && !(Number.isInteger(o.hftStage) && o.hftStage >= 0)) throw new Error(`hft stage must be a whole number ≥ 0, got ${o.hftStage}`)
  if (o.hftRound !== undefined && !(Number.isInteger(o.hftRound) && o.hftRound >= 1)) throw new Error(`hft round must be a whole number of steps ≥ 1, got ${o.hftRound}`)
  const log = o.log ?? (() => {})
  const backend = await initBackend(o.backend)
  const { model, tokenizer } = loadCheckpoint(o.base)
  try {
    const cfg = model.config
    const data = prepareData(o.data, tokenizer, cfg.contextLength, { ...o, seed: o.seed ?? 0 })
    if (data.train.length === 0) throw new DataError({ file: o.data, message: "no training examples left after the split; add data or lower --validation/--test" })
    log(reportMarkdown(data.report))
    const before = evaluateExamples("base", model, tokenizer, data.test)
    const fingerprint = baseFingerprint(model)
    const taskWeights = o.taskWeights === "balanced" ? Object.fromEntries(lossWeights(data.trainRecords, "task")) : o.taskWeights
    const steps = o.steps ?? 500
    const common = {
      steps,
      batchSize: o.batchSize ?? 64,
      warmup: o.warmup ?? Math.min(100, Math.floor(steps / 10)),
      seed: o.seed ?? 0,
      validation: data.validation,
      evalEvery: Math.max(10, Math.floor(steps / 10)),
      logEvery: Math.max(1, Math.min(10, Math.floor(steps / 50))),
      ...(taskWeights ? { taskWeights } : {}),
      onStep: (s: number, loss: number) => o.onStep?.(s, steps, loss),
    }
    let adapter: Adapter | undefined
    let trainable = 0
    const totalParams = model.numParams()
    let tensorBytes: { before: number; after: number } | undefined
    let result
    if (o.method === "lora" || o.method === "dora" || o.method === "qlora") {
      adapter = Adapter.create(
        model,
        { r: o.r ?? 8, alpha: o.alpha ?? 2 * (o.r ?? 8), dropout: o.dropout ?? 0, rslora: o.rslora ?? false, dora: o.method === "dora", targetModules: o.targets ?? ["all"], seed: o.seed ?? 0 },
        { name: path.resolve(o.base), fingerprint },
      )
      const heldBefore = tf.memory().numBytes
      // QLoRA-style: the frozen base of the targets in int8/4-bit, its float32 copy given back
      adapter.attach(model, o.method === "qlora" ? { quantize: o.bits ?? 8, releaseFloat32: true } : {})
      if (o.method === "qlora") tensorBytes = { before: heldBefore, after: tf.memory().numBytes }
      trainable = adapter.numParams()
      const ad = adapter
      result = train(model, tokenizer, data.train, { ...common, lr: o.lr ?? 1e-2, variables: ad.variables(), setTraining: (on) => (ad.training = on) })
    } else if (o.method === "full") {
      trainable = model.numParams()
      result = train(model, tokenizer, data.train, { ...common, lr: o.lr ?? 1e-3, variables: [...model.params.values()] })
    } else {
      const names = [...model.params.keys()]
      const round = o.hftRound ?? steps
      const stage = o.hftStage ?? 0
      result = train(model, tokenizer, data.train, {
        ...common,
        lr: o.lr ?? 1e-3,
        variables: (step) => {
          const vars = hftTrainable(names, stage + Math.floor((step - 1) / round), o.seed ?? 0).map((n) => model.params.get(n)!)
          trainable = vars.reduce((n, v) => n + v.size, 0)
          return vars
        },
      })
    }
    const after = evaluateExamples(o.method, model, tokenizer, data.test)
    // the artefact first (atomic), then the logs and reports next to it
    if (adapter) adapter.save(o.out)
    else saveCheckpoint(o.out, model, tokenizer, { metadata: { tuned_from: path.resolve(o.base), tune_method: o.method, base_model_fingerprint: fingerprint } })
    const bytesOnDisk = adapter ? adapterSizeOnDisk(o.out) : fs.statSync(path.join(o.out, "model.safetensors")).size
    fs.writeFileSync(path.join(o.out, "train_log.jsonl"), result.log.map((e) => JSON.stringify(e)).join("\n") + "\n")
    fs.writeFileSync(path.join(o.out, "loss.svg"), lossCurveSvg(seriesFromLog(result.log), { title: `moa tune ${o.method}: ${path.basename(o.data)}`, logY: true }))
    const report = [
      `# moa tune ${o.method}`,
      "",
      `base \`${o.base}\`, data \`${o.data}\`, ${result.steps} steps, ${result.tokens.toLocaleString("en")} tokens in ${(result.elapsedMs / 1000).toFixed(1)} s on ${backend.name}; trainable parameters ${trainable.toLocaleString("en")} of ${model.numParams().toLocaleString("en")}; ${adapter ? "adapter" : "checkpoint"} ${(bytesOnDisk / 1024).toFixed(1)} KiB.`,
      "",
      reportMarkdown(data.report),
      "## Test split",
      "",
      compareMarkdown([before, after]),
      "![loss](loss.svg)",
      "",
    ].join("\n")
    fs.writeFileSync(path.join(o.out, "report.md"), report)
    const mem = adapter?.quantizedMemory()
    const quantizedMemory = mem && tensorBytes ? { ...mem, tensorBytesBefore: tensorBytes.before, tensorBytesAfter: tensorBytes.after } : mem
    adapter?.dispose()
    return {
      out: o.out,
      method: o.method,
      backend: backend.name,
      trainableParams: trainable,
      totalParams,
      bytesOnDisk,
      ...(quantizedMemory ? { quantizedMemory } : {}),
      before,
      after,
      log: result.log,
      seconds: result.elapsedMs / 1000,
    }
  } finally {
    model.dispose()
  }
}

/**
 * Evaluate a base model and several adapters on the same JSONL set (prompt/completion[/task]):
 * one EvalResult per row, base first. Each adapter is checked against the base before use.
 */
export const compareAdapters = async (o: { base: string; adapters: ReadonlyArray<string>; data: string; backend?: BackendName; limit?: number }): Promise<{ results: EvalResult[]; markdown: string }> => {
  await initBackend(o.backend)
  const { model, tokenizer } = loadCheckpoint(o.base)
  try {
    const recs = readJsonl(o.data)
    checkLengths(recs, o.data, (s) => tokenizer.encode(s), model.config.contextLength)
    let ex: SftExample[] = recs.flatMap((r) => {
      const p = trainingPairs(r)
      return p ? [{ ...p, ...(r.task !== undefined ? { task: r.task } : {}) }] : []
    })
    if (o.limit) ex = ex.slice(0, o.limit)
    const fingerprint = baseFingerprint(model)
    const results = [evaluateExamples("base", model, tokenizer, ex)]
    const extra: Record<string, Record<string, string>> = {}
    for (const dir of o.adapters) {
      const a = Adapter.load(dir, model, { fingerprint })
      a.attach(model)
      const name = path.basename(path.resolve(dir))
      results.push(evaluateExamples(name, model, tokenizer, ex))
      extra[name] = { "trainable params": a.numParams().toLocaleString("en"), "on disk": `${(adapterSizeOnDisk(dir) / 1024).toFixed(1)} KiB` }
      a.dispose()
    }
    return { results, markdown: compareMarkdown(results, extra) }
  } finally {
    model.dispose()
  }
}
