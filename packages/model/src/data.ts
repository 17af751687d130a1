// Data: the row format inside the model and JSONL files.
//   prompt/completion → bos prompt sep completion eos, loss on "completion eos"
//   text              → bos text eos, loss on every token after bos

import * as fs from "node:fs"
import type { Example } from "./train.js"
import type { Tokenizer } from "./tokenizer.js"

export type Record_ = { prompt: string; completion: string } | { text: string }

export function encodePrompt(tok: Tokenizer, prompt: string): number[] {
  return [tok.bos, ...tok.encode(prompt), tok.sep]
}

export function encodeExample(tok: Tokenizer, r: Record_): Example {
  if ("text" in r) {
    const ids = [tok.bos, ...tok.encode(r.text), tok.eos]
    return { ids, mask: ids.map((_, i) => (i === 0 ? 0 : 1)) }
  }
  const p = encodePrompt(tok, r.prompt)
  const c = [...tok.encode(r.completion), tok.eos]
  return { ids: [...p, ...c], mask: [...p.map(() => 0), ...c.map(() => 1)] }
}

/** Parse JSONL with `prompt`+`completion` or `text` per line; errors name the file and line. */
export function parseJsonl(content: string, file = "<data>"): Record_[] {
  const out: Record_[] = []
  content.split("\n").forEach((line, i) => {
    if (!line.trim()) return
    const where = `${file}:${i + 1}`
    let j: any
    try {
      j = JSON.parse(line)
    } catch (e) {
      throw new Error(`${where}: not valid JSON (${(e as Error).message})`)
    }
    if (j && typeof j.prompt === "string" && typeof j.completion === "string") out.push({ prompt: j.prompt, completion: j.completion })
    else if (j && typeof j.text === "string") out.push({ text: j.text })
    else throw new Error(`${where}: each line needs string fields "prompt" and "completion", or "text"`)
  })
  if (out.length === 0) throw new Error(`${file}: no examples (expected JSON lines with prompt/completion or text)`)
  return out
}

export function readJsonl(file: string): Record_[] {
  let content: string
  try {
    content = fs.readFileSync(file, "utf8")
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as Error).message})`)
  }
  return parseJsonl(content, file)
}

/** All the text of the records, for training a tokenizer. */
export function corpusOf(records: Record_[]): string[] {
  return records.flatMap((r) => ("text" in r ? [r.text] : [r.prompt, r.completion]))
}
