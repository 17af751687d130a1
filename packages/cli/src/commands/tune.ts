/**
 * `moa tune <full|lora|dora|qlora|hft> --base <model dir> --data <jsonl> --out <dir>`: fine-tune
 * a base checkpoint (stages 1–5 of the fine-tuning pipeline, @moa/tune runTune) with a progress
 * bar; writes an adapter in PEFT's layout (lora, dora, qlora) or a checkpoint (full, hft), plus
 * report.md, train_log.jsonl and loss.svg in the same folder.
 *
 * `moa tune compare --base <model dir> --adapter a --adapter b --data <jsonl>`: the base and
 * several adapters on the same set, as one markdown table (exact match per task, loss, perplexity).
 */
import * as fs from "node:fs"
import { Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import type { BackendName } from "@moa/model"
import { type QuantBits, type TuneMethod, compareAdapters, runTune } from "@moa/tune"
import { CliFailure } from "../common.ts"
import { backendOpt, fmtSeconds, progressLine, progressRenderer } from "./train.ts"

const pct = (x: number) => `${(100 * x).toFixed(1)}%`

const methodCommand = (method: TuneMethod, description: string) =>
  Command.make(
    method,
    {
      base: Options.directory("base").pipe(Options.withDescription("base checkpoint folder (config.json, model.safetensors, tokenizer.json)")),
      data: Options.file("data").pipe(Options.withDescription("JSONL: prompt/completion, messages, prompt/chosen/rejected or prompt/completion/label; optional task")),
      out: Options.text("out").pipe(Options.withDescription("output folder (written atomically)")),
      steps: Options.integer("steps").pipe(Options.withDefault(500)),
      batchSize: Options.integer("batch-size").pipe(Options.withDefault(64)),
      lr: Options.float("lr").pipe(Options.optional, Options.withDescription("learning rate (default 1e-2 for adapters, 1e-3 for full/hft)")),
      warmup: Options.integer("warmup").pipe(Options.optional),
      seed: Options.integer("seed").pipe(Options.withDefault(0)),
      r: Options.integer("r").pipe(Options.withDefault(8), Options.withDescription("LoRA rank")),
      alpha: Options.float("alpha").pipe(Options.optional, Options.withDescription("LoRA alpha (default 2r)")),
      dropout: Options.float("dropout").pipe(Options.withDefault(0)),
      rslora: Options.boolean("rslora").pipe(Options.withDescription("scale by alpha/√r instead of alpha/r")),
      targets: Options.text("targets").pipe(Options.withDefault("all"), Options.withDescription("target modules: q,k,v,o,mlp_in,mlp_out, all, full names or /regex/")),
      bits: Options.choice("bits", ["8", "4"]).pipe(Options.withDefault("8" as const), Options.withDescription("qlora: base weights in int8 or 4-bit")),
      hftStage: Options.integer("hft-stage").pipe(Options.withDefault(0), Options.withDescription("hft: the fine-tuning stage this job is (0, 1, …); each stage trains another half of every category")),
      hftRound: Options.integer("hft-round").pipe(Options.optional, Options.withDescription("hft: re-draw the trained half every N steps inside the job (default: one half for the whole job)")),
      validation: Options.float("validation").pipe(Options.withDefault(0.1)),
      test: Options.float("test").pipe(Options.withDefault(0.1)),
      stratify: Options.choice("stratify", ["task", "label", "none"]).pipe(Options.withDefault("task" as const)),
      oversample: Options.boolean("oversample").pipe(Options.withDescription("repeat rarer tasks until every task is as common as the largest")),
      balanced: Options.boolean("balanced-loss").pipe(Options.withDescription("weight each task's loss by inverse frequency")),
      json: Options.boolean("json").pipe(Options.withDescription("print the result as JSON")),
      backend: backendOpt,
    },
    (a) =>
      Effect.tryPromise({
        try: async () => {
          const bar = progressRenderer()
          const t0 = Date.now()
          const r = await runTune({
            method,
            base: a.base,
            data: a.data,
            out: a.out,
            steps: a.steps,
            batchSize: a.batchSize,
            seed: a.seed,
            r: a.r,
            dropout: a.dropout,
            rslora: a.rslora,
            targets: a.targets.split(",").map((s) => s.trim()).filter(Boolean),
            bits: Number(a.bits) as QuantBits,
            validation: a.validation,
            test: a.test,
            stratifyBy: a.stratify,
            oversample: a.oversample,
            ...(a.balanced ? { taskWeights: "balanced" as const } : {}),
            ...Option.match(a.lr, { onNone: () => ({}), onSome: (lr) => ({ lr }) }),
            ...Option.match(a.warmup, { onNone: () => ({}), onSome: (warmup) => ({ warmup }) }),
            ...Option.match(a.alpha, { onNone: () => ({}), onSome: (alpha) => ({ alpha }) }),
            hftStage: a.hftStage,
            ...Option.match(a.hftRound, { onNone: () => ({}), onSome: (hftRound) => ({ hftRound }) }),
            ...Option.match(a.backend, { onNone: () => ({}), onSome: (b) => ({ backend: b as BackendName }) }),
            onStep: (step, steps, loss) => {
              const el = (Date.now() - t0) / 1000
              bar.draw(progressLine(step, steps, [`step ${step}/${steps} loss ${loss.toFixed(4)}`, `ETA ${fmtSeconds((el / step) * (steps - step))}`]), step, steps)
            },
            log: (l) => process.stderr.write(`${l}\n`),
          })
          if (a.json) {
            const { log: _log, ...rest } = r
            process.stdout.write(`${JSON.stringify({ ...rest, before: { ...r.before, samples: undefined }, after: { ...r.after, samples: undefined } })}\n`)
            return
          }
          process.stdout.write(
            `saved ${r.out} (${method}): trainable ${r.trainableParams.toLocaleString("en")} of ${r.totalParams.toLocaleString("en")} parameters, ` +
              `${(r.bytesOnDisk / 1024).toFixed(1)} KiB on disk, ${fmtSeconds(r.seconds)} on ${r.backend}\n` +
              `test exact match: base ${pct(r.before.accuracy)} → ${pct(r.after.accuracy)}` +
              (r.after.loss !== undefined ? `; loss ${r.before.loss?.toFixed(4)} → ${r.after.loss.toFixed(4)}` : "") +
              (r.quantizedMemory ? `; base linear weights ${(r.quantizedMemory.quantizedBytes / 1024).toFixed(1)} KiB instead of ${(r.quantizedMemory.float32Bytes / 1024).toFixed(1)} KiB` + (r.quantizedMemory.tensorBytesAfter !== undefined ? ` (tensor memory ${(r.quantizedMemory.tensorBytesBefore! / 1024).toFixed(1)} → ${(r.quantizedMemory.tensorBytesAfter / 1024).toFixed(1)} KiB with the adapter attached)` : "") : "") +
              `\nreport: ${r.out}/report.md, loss curve: ${r.out}/loss.svg\n`,
          )
        },
        catch: (e) => new CliFailure({ message: `moa tune ${method}: ${(e as Error).message}` }),
      }),
  ).pipe(Command.withDescription(description))

const compareCommand = Command.make(
  "compare",
  {
    base: Options.directory("base").pipe(Options.withDescription("base checkpoint folder")),
    adapters: Options.directory("adapter").pipe(Options.repeated, Options.withDescription("adapter folder (repeat for several)")),
    data: Options.file("data").pipe(Options.withDescription("JSONL with prompt/completion (optional task)")),
    limit: Options.integer("limit").pipe(Options.withDefault(0)),
    out: Options.text("out").pipe(Options.optional, Options.withDescription("also write the markdown table to this file")),
    backend: backendOpt,
  },
  (a) =>
    Effect.tryPromise({
      try: async () => {
        const { markdown } = await compareAdapters({
          base: a.base,
          adapters: a.adapters,
          data: a.data,
          limit: a.limit,
          ...Option.match(a.backend, { onNone: () => ({}), onSome: (b) => ({ backend: b as BackendName }) }),
        })
        process.stdout.write(markdown)
        if (Option.isSome(a.out)) fs.writeFileSync(a.out.value, markdown)
      },
      catch: (e) => new CliFailure({ message: `moa tune compare: ${(e as Error).message}` }),
    }),
).pipe(Command.withDescription("compare the base and several adapters on the same JSONL set (markdown table)"))

export const tuneCommand = Command.make("tune").pipe(
  Command.withDescription("fine-tune a base model: full, lora, dora, qlora (int8/4-bit base), hft (Half Fine-Tuning); compare adapters"),
  Command.withSubcommands([
    methodCommand("full", "full fine-tuning (every parameter; the baseline)"),
    methodCommand("lora", "LoRA adapter (r, alpha, dropout, rsLoRA) saved in PEFT's layout"),
    methodCommand("dora", "DoRA adapter (LoRA + magnitude vector) saved in PEFT's layout"),
    methodCommand("qlora", "LoRA over a frozen base held in int8 or 4-bit, dequantised on the fly"),
    methodCommand("hft", "Half Fine-Tuning: each round trains half of each parameter category"),
    compareCommand,
  ]),
)
