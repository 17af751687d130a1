/**
 * `moa train --data file.jsonl [--config cfg.json] --out dir`: train a model from scratch
 * (or resume one) on JSONL with `prompt`/`completion` or `text` per line, and save it as
 * an HF-style folder. `runTrain` is the same thing as a function.
 *
 * cfg.json (every part optional):
 *   { "model": { GPTConfig fields but vocabSize },
 *     "train": { TrainConfig fields },
 *     "tokenizer": { "type": "char" | "bpe", "vocabSize": 512 (bpe), "byteFallback": true (char) },
 *     "valFraction": 0.05 }
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import {
  BPETokenizer, CharTokenizer, GPT, corpusOf, encodeExample, initBackend, loadCheckpoint, makeConfig, readJsonl, rng, train,
  type BackendName, type GPTConfig, type Progress, type TrainConfig, type TrainResult,
} from "@moa/model"
import { CliFailure } from "../common.ts"

export interface TrainFileConfig {
  model?: Partial<Omit<GPTConfig, "vocabSize">>
  train?: Partial<TrainConfig>
  tokenizer?: { type?: "char" | "bpe"; vocabSize?: number; byteFallback?: boolean }
  valFraction?: number
}

export interface RunTrainOptions {
  data: string
  out: string
  config?: string | TrainFileConfig
  /** separate validation JSONL (default: a held-out slice of --data) */
  valData?: string
  steps?: number
  maxSeconds?: number
  backend?: BackendName
  /** continue from the checkpoint in `out` */
  resume?: boolean
  seed?: number
  onProgress?: (p: Progress) => void
  log?: (line: string) => void
}

export interface RunTrainResult {
  out: string
  backend: string
  params: number
  examples: { train: number; val: number }
  result: TrainResult
}

function readConfig(c: RunTrainOptions["config"]): TrainFileConfig {
  if (c === undefined) return {}
  if (typeof c !== "string") return c
  try {
    return JSON.parse(fs.readFileSync(c, "utf8")) as TrainFileConfig
  } catch (e) {
    throw new Error(`${c}: cannot read the training config (${(e as Error).message})`)
  }
}

export async function runTrain(o: RunTrainOptions): Promise<RunTrainResult> {
  const log = o.log ?? (() => {})
  const cfg = readConfig(o.config)
  const known = new Set(["model", "train", "tokenizer", "valFraction"])
  for (const k of Object.keys(cfg)) if (!known.has(k)) throw new Error(`training config has no section "${k}" (known: ${[...known].join(", ")})`)
  const backend = await initBackend(o.backend)
  log(`backend: ${backend.name} (${backend.reason})`)

  const records = readJsonl(o.data)
  const seed = o.seed ?? cfg.train?.seed ?? 1
  let trainRecs = records
  let valRecs = o.valData ? readJsonl(o.valData) : []
  if (!o.valData) {
    const frac = cfg.valFraction ?? 0.05
    const nVal = records.length >= 20 ? Math.min(500, Math.floor(records.length * frac)) : 0
    const r = rng(seed + 17)
    const order = records.map((_, i) => i)
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1))
      ;[order[i], order[j]] = [order[j], order[i]]
    }
    valRecs = order.slice(0, nVal).map((i) => records[i])
    trainRecs = order.slice(nVal).map((i) => records[i])
  }

  const resuming = o.resume && fs.existsSync(path.join(o.out, "optimizer.safetensors"))
  let model: GPT
  let tokenizer
  if (resuming) {
    const ck = loadCheckpoint(o.out)
    model = ck.model
    tokenizer = ck.tokenizer
    log(`resuming from ${o.out} (step ${ck.metadata.step ?? "?"})`)
  } else {
    const corpus = corpusOf(records)
    const t = cfg.tokenizer ?? {}
    tokenizer = t.type === "bpe" ? BPETokenizer.train(corpus, t.vocabSize ?? 512) : CharTokenizer.train(corpus, { byteFallback: t.byteFallback })
    const config = makeConfig({ ...cfg.model, vocabSize: tokenizer.vocabSize })
    const ctx = config.contextLength
    const longest = Math.max(...trainRecs.map((r) => encodeExample(tokenizer!, r).ids.length))
    if (longest > ctx + 1) log(`warning: the longest example has ${longest} tokens; rows are cut to contextLength ${ctx} + 1`)
    model = new GPT(config, { seed })
  }
  const enc = (rs: typeof records) => rs.map((r) => encodeExample(tokenizer!, r))
  const trainConfig: Partial<TrainConfig> = {
    ...cfg.train,
    ...(o.steps !== undefined ? { steps: o.steps } : {}),
    ...(o.maxSeconds !== undefined ? { maxSeconds: o.maxSeconds } : {}),
    seed,
  }
  if (valRecs.length && trainConfig.evalEvery === undefined) trainConfig.evalEvery = Math.max(1, Math.floor((trainConfig.steps ?? 1000) / 10))
  log(`model: ${model.numParams().toLocaleString("en-US")} parameters, ${tokenizer.kind} tokenizer of ${tokenizer.vocabSize}; ` +
    `${trainRecs.length} training / ${valRecs.length} validation examples`)
  const result = await train({
    model, tokenizer, train: enc(trainRecs), val: valRecs.length ? enc(valRecs) : undefined, config: trainConfig,
    checkpointDir: o.out, onProgress: o.onProgress, resumeFrom: resuming ? o.out : undefined,
  })
  const params = model.numParams()
  model.dispose()
  return { out: o.out, backend: backend.name, params, examples: { train: trainRecs.length, val: valRecs.length }, result }
}

// ---------------------------------------------------------------- progress bar

export const fmtSeconds = (s: number) => {
  if (!Number.isFinite(s)) return "?"
  s = Math.round(s)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
}

/** One line: `step 120/1000 [####------] loss 1.234 val 1.301 | 2,950 tok/s | ETA 4m05s`. */
export function progressLine(done: number, total: number, parts: string[], width = 24): string {
  const filled = Math.round((width * done) / Math.max(1, total))
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${parts.join(" | ")}`
}

/** Renders progress on stderr: redrawn in place on a terminal, otherwise a line every 5% or 30 s. */
export function progressRenderer(stream: NodeJS.WriteStream = process.stderr) {
  let lastPct = -1
  let lastAt = Date.now()
  let lastVal: number | undefined
  return {
    train(p: Progress) {
      if (p.valLoss !== undefined) lastVal = p.valLoss
      const line = progressLine(p.step, p.steps, [
        `step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)}${lastVal !== undefined ? ` val ${lastVal.toFixed(4)} (ppl ${Math.exp(lastVal).toFixed(2)})` : ""}`,
        `${Math.round(p.tokensPerSec).toLocaleString("en-US")} tok/s`,
        `ETA ${fmtSeconds(p.etaSec)}`,
      ])
      this.draw(line, p.step, p.steps)
    },
    draw(line: string, done: number, total: number) {
      if (stream.isTTY) {
        stream.write(`\r${line}\x1b[K${done >= total ? "\n" : ""}`)
        return
      }
      const pct = Math.floor((100 * done) / Math.max(1, total) / 5)
      const now = Date.now()
      if (pct !== lastPct || done >= total || now - lastAt > 30_000) {
        lastPct = pct
        lastAt = now
        stream.write(`${line}\n`)
      }
    },
  }
}

// ---------------------------------------------------------------- the command

const backendOpt = Options.choice("backend", ["tensorflow", "native", "wasm", "cpu"]).pipe(
  Options.withDescription("compute backend (default: best available; env MOA_BACKEND)"),
  Options.optional,
)
export { backendOpt }

export const trainCommand = Command.make(
  "train",
  {
    data: Options.file("data").pipe(Options.withDescription("JSONL: {prompt, completion} or {text} per line")),
    config: Options.file("config").pipe(Options.withDescription("JSON with model / train / tokenizer sections"), Options.optional),
    out: Options.directory("out").pipe(Options.withDescription("checkpoint folder to write")),
    val: Options.file("val").pipe(Options.withDescription("validation JSONL (default: 5% of --data)"), Options.optional),
    steps: Options.integer("steps").pipe(Options.withDescription("override train.steps"), Options.optional),
    maxSeconds: Options.integer("max-seconds").pipe(Options.withDescription("stop after this many seconds"), Options.optional),
    resume: Options.boolean("resume").pipe(Options.withDescription("continue from the checkpoint in --out")),
    seed: Options.integer("seed").pipe(Options.optional),
    backend: backendOpt,
  },
  (a) =>
    Effect.tryPromise({
      try: async () => {
        const bar = progressRenderer()
        const r = await runTrain({
          data: a.data, out: a.out, config: Option.getOrUndefined(a.config), valData: Option.getOrUndefined(a.val),
          steps: Option.getOrUndefined(a.steps), maxSeconds: Option.getOrUndefined(a.maxSeconds), resume: a.resume,
          seed: Option.getOrUndefined(a.seed), backend: Option.getOrUndefined(a.backend) as BackendName | undefined,
          onProgress: (p) => bar.train(p), log: (l) => process.stderr.write(`${l}\n`),
        })
        const res = r.result
        process.stdout.write(
          `saved ${r.out}: ${res.steps} steps, ${res.tokens.toLocaleString("en-US")} tokens in ${fmtSeconds(res.seconds)} ` +
            `(${Math.round(res.tokens / res.seconds).toLocaleString("en-US")} tok/s on ${r.backend}), final loss ${res.finalLoss.toFixed(4)}` +
            `${res.bestValLoss !== undefined ? `, best val loss ${res.bestValLoss.toFixed(4)}` : ""}${res.stoppedEarly ? " (stopped early)" : ""}\n`,
        )
      },
      catch: (e) => new CliFailure({ message: `moa train: ${(e as Error).message}` }),
    }),
).pipe(Command.withDescription("train a model on JSONL data and save it as config.json + model.safetensors + tokenizer.json"))
