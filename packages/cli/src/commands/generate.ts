/** `moa generate --model dir "prompt" ["prompt" …]`: sample from a checkpoint; one prompt streams. */
import { Args, Command, Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { generate, generateStream, initBackend, loadCheckpoint, type BackendName, type GenerateOptions, type Generation } from "@moa/model"
import { CliFailure } from "../common.ts"
import { backendOpt } from "./train.ts"

export interface RunGenerateOptions extends GenerateOptions {
  model: string
  prompts: string[]
  backend?: BackendName
  /** called with each new piece of text when there is one prompt */
  onText?: (text: string) => void
}

export async function runGenerate(o: RunGenerateOptions): Promise<{ backend: string; outputs: Generation[] }> {
  if (o.prompts.length === 0) throw new Error("give at least one prompt")
  const backend = await initBackend(o.backend)
  const { model, tokenizer } = loadCheckpoint(o.model)
  try {
    if (o.prompts.length === 1 && o.onText) {
      const it = generateStream(model, tokenizer, o.prompts[0], o)
      let r = await it.next()
      while (!r.done) {
        o.onText(r.value.text)
        r = await it.next()
      }
      return { backend: backend.name, outputs: [r.value] }
    }
    return { backend: backend.name, outputs: generate(model, tokenizer, o.prompts, o) }
  } finally {
    model.dispose()
  }
}

export const generateCommand = Command.make(
  "generate",
  {
    prompts: Args.text({ name: "prompt" }).pipe(Args.repeated),
    model: Options.directory("model").pipe(Options.withDescription("checkpoint folder (config.json, model.safetensors, tokenizer.json)")),
    maxTokens: Options.integer("max-tokens").pipe(Options.withDefault(64)),
    temperature: Options.float("temperature").pipe(Options.withDescription("0 = greedy"), Options.withDefault(0)),
    topK: Options.integer("top-k").pipe(Options.withDefault(0)),
    topP: Options.float("top-p").pipe(Options.withDefault(1)),
    stop: Options.text("stop").pipe(Options.repeated, Options.withDescription("stop sequence (repeatable)")),
    seed: Options.integer("seed").pipe(Options.withDefault(0)),
    raw: Options.boolean("raw").pipe(Options.withDescription("continue the text as is (no prompt/answer separator)")),
    json: Options.boolean("json").pipe(Options.withDescription("print one JSON object per prompt")),
    backend: backendOpt,
  },
  (a) =>
    Effect.tryPromise({
      try: async () => {
        const streaming = a.prompts.length === 1 && !a.json
        const { outputs } = await runGenerate({
          model: a.model, prompts: [...a.prompts], maxTokens: a.maxTokens, temperature: a.temperature, topK: a.topK, topP: a.topP,
          stop: [...a.stop], seed: a.seed, raw: a.raw, backend: Option.getOrUndefined(a.backend) as BackendName | undefined,
          onText: streaming ? (t) => process.stdout.write(t) : undefined,
        })
        if (streaming) process.stdout.write("\n")
        else if (a.json) for (const [i, o] of outputs.entries()) process.stdout.write(`${JSON.stringify({ prompt: a.prompts[i], ...o })}\n`)
        else for (const o of outputs) process.stdout.write(`${o.text}\n`)
      },
      catch: (e) => new CliFailure({ message: `moa generate: ${(e as Error).message}` }),
    }),
).pipe(Command.withDescription("generate text from a checkpoint (one prompt streams; several run batched)"))
