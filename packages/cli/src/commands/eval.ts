/** `moa eval --model dir --data file.jsonl`: loss, perplexity and exact match (greedy) on a JSONL set. */
import { Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { encodeExample, evaluateLoss, generate, initBackend, loadCheckpoint, readJsonl, type BackendName } from "@moa/model"
import { CliFailure } from "../common.ts"
import { backendOpt, progressLine, progressRenderer } from "./train.ts"

export interface RunEvalOptions {
  model: string
  data: string
  batchSize?: number
  /** at most this many examples (0: all) */
  limit?: number
  maxTokens?: number
  backend?: BackendName
  onProgress?: (done: number, total: number) => void
}

export interface EvalReport {
  examples: number
  loss: number
  perplexity: number
  /** exact match of the greedy answer (trimmed) on prompt/completion lines; undefined when there are none */
  exactMatch?: number
  scored: number
  backend: string
}

export async function runEval(o: RunEvalOptions): Promise<EvalReport> {
  const backend = await initBackend(o.backend)
  let records = readJsonl(o.data)
  if (o.limit) records = records.slice(0, o.limit)
  const { model, tokenizer } = loadCheckpoint(o.model)
  try {
    const bs = o.batchSize ?? 32
    const qa = records.filter((r): r is { prompt: string; completion: string } => "prompt" in r)
    const total = records.length + qa.length
    let done = 0
    // loss/perplexity over the target tokens of every line, batch by batch for progress
    let sum = 0
    let count = 0
    for (let i = 0; i < records.length; i += bs) {
      const part = records.slice(i, i + bs).map((r) => encodeExample(tokenizer, r))
      const e = evaluateLoss(model, part, bs)
      sum += e.loss * e.tokens
      count += e.tokens
      done += part.length
      o.onProgress?.(done, total)
    }
    let correct = 0
    const maxAnswer = Math.max(1, ...qa.map((r) => tokenizer.encode(r.completion).length + 1))
    for (let i = 0; i < qa.length; i += bs) {
      const part = qa.slice(i, i + bs)
      const outs = generate(model, tokenizer, part.map((r) => r.prompt), { maxTokens: o.maxTokens ?? maxAnswer })
      outs.forEach((g, k) => (correct += g.text.trim() === part[k].completion.trim() ? 1 : 0))
      done += part.length
      o.onProgress?.(done, total)
    }
    const loss = sum / Math.max(1, count)
    return {
      examples: records.length, loss, perplexity: Math.exp(loss),
      exactMatch: qa.length ? correct / qa.length : undefined, scored: qa.length, backend: backend.name,
    }
  } finally {
    model.dispose()
  }
}

export const evalCommand = Command.make(
  "eval",
  {
    model: Options.directory("model").pipe(Options.withDescription("checkpoint folder")),
    data: Options.file("data").pipe(Options.withDescription("JSONL: {prompt, completion} or {text} per line")),
    batchSize: Options.integer("batch-size").pipe(Options.withDefault(32)),
    limit: Options.integer("limit").pipe(Options.withDescription("only the first N lines"), Options.withDefault(0)),
    json: Options.boolean("json").pipe(Options.withDescription("print the report as JSON")),
    backend: backendOpt,
  },
  (a) =>
    Effect.tryPromise({
      try: async () => {
        const bar = progressRenderer()
        const r = await runEval({
          model: a.model, data: a.data, batchSize: a.batchSize, limit: a.limit,
          backend: Option.getOrUndefined(a.backend) as BackendName | undefined,
          onProgress: (d, t) => bar.draw(progressLine(d, t, [`${d}/${t}`]), d, t),
        })
        if (a.json) process.stdout.write(`${JSON.stringify(r)}\n`)
        else
          process.stdout.write(
            `${r.examples} examples: loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(3)}` +
              `${r.exactMatch !== undefined ? `, exact match ${(100 * r.exactMatch).toFixed(1)}% of ${r.scored}` : ""} (${r.backend})\n`,
          )
      },
      catch: (e) => new CliFailure({ message: `moa eval: ${(e as Error).message}` }),
    }),
).pipe(Command.withDescription("loss, perplexity and greedy exact match of a checkpoint on a JSONL set"))
