/**
 * Stage 1 of the fine-tuning pipeline: reading and validating JSONL datasets in TRL's standard
 * shapes. Every error names the file, the line (1-based) and the field, and says what to do.
 */
import * as fs from "node:fs"

export type Shape = "completion" | "chat" | "preference" | "unpaired" | "prompt"

export interface ChatMessage {
  readonly role: "system" | "user" | "assistant"
  readonly content: string
}

/** Fields common to every record: an optional task (for stratification and loss weights). */
interface Common {
  readonly task?: string
  /** 1-based line in the source file (0 for records made in memory). */
  readonly line: number
}
export interface CompletionRecord extends Common { readonly shape: "completion"; readonly prompt: string; readonly completion: string }
export interface ChatRecord extends Common { readonly shape: "chat"; readonly messages: ReadonlyArray<ChatMessage> }
export interface PreferenceRecord extends Common { readonly shape: "preference"; readonly prompt: string; readonly chosen: string; readonly rejected: string }
export interface UnpairedRecord extends Common { readonly shape: "unpaired"; readonly prompt: string; readonly completion: string; readonly label: boolean }
export interface PromptRecord extends Common { readonly shape: "prompt"; readonly prompt: string }
export type DataRecord = CompletionRecord | ChatRecord | PreferenceRecord | UnpairedRecord | PromptRecord

/** A problem with a dataset, pointing at where it is. */
export class DataError extends Error {
  readonly file: string
  readonly line: number | undefined
  readonly field: string | undefined
  constructor(args: { file: string; line?: number; field?: string; message: string }) {
    const where = `${args.file}${args.line !== undefined ? `:${args.line}` : ""}${args.field !== undefined ? ` field "${args.field}"` : ""}`
    super(`${where}: ${args.message}`)
    this.name = "DataError"
    this.file = args.file
    this.line = args.line
    this.field = args.field
  }
}

const SHAPE_FIELDS: Record<Shape, ReadonlyArray<string>> = {
  preference: ["prompt", "chosen", "rejected"],
  unpaired: ["prompt", "completion", "label"],
  completion: ["prompt", "completion"],
  chat: ["messages"],
  prompt: ["prompt"],
}

/** The shape a JSON object has, by its keys (most specific first), or undefined. */
export const detectShape = (o: Record<string, unknown>): Shape | undefined => {
  if ("messages" in o) return "chat"
  if ("chosen" in o || "rejected" in o) return "preference"
  if ("label" in o) return "unpaired"
  if ("completion" in o) return "completion"
  if ("prompt" in o) return "prompt"
  return undefined
}

/** Validate one parsed JSON value as a record of `shape`. Throws DataError naming the field. */
export const toRecord = (value: unknown, shape: Shape | undefined, file: string, line: number): DataRecord => {
  const fail = (field: string | undefined, message: string): never => {
    throw new DataError({ file, line, ...(field !== undefined ? { field } : {}), message })
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return fail(undefined, `expected a JSON object, got ${Array.isArray(value) ? "an array" : typeof value}`)
  const o = value as Record<string, unknown>
  const s = shape ?? detectShape(o)
  if (!s) return fail(undefined, `cannot tell the record's shape: expected "prompt" with "completion", "messages", "chosen"/"rejected" or "label" (keys found: ${Object.keys(o).join(", ") || "none"})`)
  for (const f of SHAPE_FIELDS[s]) if (!(f in o) || o[f] === null || o[f] === undefined) fail(f, `missing (a ${s} record needs ${SHAPE_FIELDS[s].map((x) => `"${x}"`).join(", ")})`)
  const str = (f: string, allowEmpty = false): string => {
    const v = o[f]
    if (typeof v !== "string") return fail(f, `must be a string, got ${typeof v}`)
    if (!allowEmpty && v.length === 0) return fail(f, "is empty")
    return v
  }
  let task: string | undefined
  if ("task" in o && o.task !== undefined && o.task !== null) {
    if (typeof o.task !== "string" || o.task.length === 0) fail("task", "must be a non-empty string when present")
    task = o.task as string
  }
  const common = { line, ...(task !== undefined ? { task } : {}) }
  switch (s) {
    case "completion":
      return { shape: s, prompt: str("prompt", true), completion: str("completion"), ...common }
    case "prompt":
      return { shape: s, prompt: str("prompt"), ...common }
    case "preference": {
      const r = { shape: s, prompt: str("prompt", true), chosen: str("chosen"), rejected: str("rejected"), ...common }
      if (r.chosen === r.rejected) fail("rejected", "is identical to chosen: the pair teaches nothing")
      return r
    }
    case "unpaired": {
      if (typeof o.label !== "boolean") fail("label", `must be true or false, got ${JSON.stringify(o.label)}`)
      return { shape: s, prompt: str("prompt", true), completion: str("completion"), label: o.label as boolean, ...common }
    }
    case "chat": {
      const ms = o.messages
      if (!Array.isArray(ms) || ms.length === 0) return fail("messages", "must be a non-empty array of {role, content}")
      const messages: ChatMessage[] = ms.map((m, i) => {
        const f = `messages[${i}]`
        if (typeof m !== "object" || m === null) return fail(f, "must be an object {role, content}")
        const { role, content } = m as Record<string, unknown>
        if (role !== "system" && role !== "user" && role !== "assistant") return fail(`${f}.role`, `must be "system", "user" or "assistant", got ${JSON.stringify(role)}`)
        if (typeof content !== "string") return fail(`${f}.content`, "must be a string")
        return { role, content }
      })
      if (messages[messages.length - 1]!.role !== "assistant") fail("messages", "the last message must be the assistant's (it is what the model learns to say)")
      return { shape: s, messages, ...common }
    }
  }
}

export interface ReadOptions {
  /** Require this shape on every line (default: detected from the first record, then required). */
  readonly shape?: Shape
}

/** Parse JSONL text. Blank lines are skipped; every other line must be one record of the same shape. */
export const parseJsonl = (text: string, file: string, opts: ReadOptions = {}): DataRecord[] => {
  const out: DataRecord[] = []
  let shape = opts.shape
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim()
    if (raw.length === 0) continue
    let value: unknown
    try {
      value = JSON.parse(raw)
    } catch (e) {
      throw new DataError({ file, line: i + 1, message: `not valid JSON (${(e as Error).message}); each line must be one JSON object` })
    }
    const r = toRecord(value, shape, file, i + 1)
    if (shape === undefined) shape = r.shape
    out.push(r)
  }
  if (out.length === 0) throw new DataError({ file, message: "the dataset is empty (no records); add one JSON object per line" })
  return out
}

/** Read and validate a JSONL file. */
export const readJsonl = (file: string, opts: ReadOptions = {}): DataRecord[] => {
  let text: string
  try {
    text = fs.readFileSync(file, "utf8")
  } catch (e) {
    throw new DataError({ file, message: `cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); check the --data path` })
  }
  return parseJsonl(text, file, opts)
}

/** Write records as JSONL (atomically: temp file then rename). */
export const writeJsonl = (file: string, records: ReadonlyArray<object>): void => {
  const tmp = `${file}.tmp-${process.pid}`
  fs.writeFileSync(tmp, records.map((r) => JSON.stringify(stripMeta(r))).join("\n") + "\n")
  fs.renameSync(tmp, file)
}
const stripMeta = (r: object): object => {
  const { shape: _s, line: _l, ...rest } = r as Record<string, unknown>
  return rest
}

/** Render a chat as a prompt/completion pair: every message but the last assistant turn is the prompt. */
export const chatToCompletion = (r: ChatRecord): CompletionRecord => {
  const last = r.messages[r.messages.length - 1]!
  const prompt = r.messages
    .slice(0, -1)
    .map((m) => `${m.role}: ${m.content}\n`)
    .join("")
  return { shape: "completion", prompt: `${prompt}assistant: `, completion: last.content, line: r.line, ...(r.task !== undefined ? { task: r.task } : {}) }
}

/** The text a record trains on, as (prompt, completion) pairs: completion/chat/unpaired→1, preference→chosen. */
export const trainingPairs = (r: DataRecord): { prompt: string; completion: string } | undefined => {
  switch (r.shape) {
    case "completion":
      return { prompt: r.prompt, completion: r.completion }
    case "chat":
      return chatToCompletion(r)
    case "unpaired":
      return r.label ? { prompt: r.prompt, completion: r.completion } : undefined
    case "preference":
      return { prompt: r.prompt, completion: r.chosen }
    case "prompt":
      return undefined
  }
}

/**
 * Check that every record fits the model's context: prompt + completion + end marker tokens
 * must be ≤ contextLength. Throws DataError naming the first record that does not.
 */
export const checkLengths = (
  records: ReadonlyArray<DataRecord>,
  file: string,
  encode: (s: string) => ReadonlyArray<number>,
  contextLength: number,
): void => {
  for (const r of records) {
    const texts: Array<[string, string]> =
      r.shape === "chat"
        ? [["messages", chatToCompletion(r).prompt + chatToCompletion(r).completion]]
        : r.shape === "preference"
          ? [["chosen", r.prompt + r.chosen], ["rejected", r.prompt + r.rejected]]
          : r.shape === "prompt"
            ? [["prompt", r.prompt]]
            : [["completion", r.prompt + r.completion]]
    // the model's row: [bos] prompt [sep] completion [eos]; its input is all but the last token
    const pLen = "prompt" in r ? encode(r.prompt).length : 0
    if (pLen + 2 >= contextLength)
      throw new DataError({ file, line: r.line, field: "prompt", message: `is ${pLen} tokens (${pLen + 2} with the bos/sep markers), leaving no room for an answer in the model's context of ${contextLength}; shorten it or use a model with a longer context` })
    for (const [field, t] of texts) {
      const n = encode(t).length + 2
      if (n > contextLength)
        throw new DataError({ file, line: r.line, field, message: `prompt + ${field} is ${n} tokens (with the bos/sep/eos markers), longer than the model's context of ${contextLength}; shorten it or use a model with a longer context` })
    }
  }
}
