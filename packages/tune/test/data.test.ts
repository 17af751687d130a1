import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import {
  DataError,
  checkLengths,
  datasetReport,
  dedupe,
  lossWeights,
  oversample,
  parseJsonl,
  readJsonl,
  reportMarkdown,
  splitDataset,
  writeJsonl,
  type DataRecord,
} from "../src/data/index.ts"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "moa-tune-data-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
const file = (name: string, text: string) => {
  const p = path.join(dir, name)
  fs.writeFileSync(p, text)
  return p
}
const errorOf = (f: () => unknown): DataError => {
  try {
    f()
  } catch (e) {
    expect(e).toBeInstanceOf(DataError)
    return e as DataError
  }
  throw new Error("expected a DataError")
}

describe("JSONL readers", () => {
  it("reads the five TRL shapes", () => {
    expect(parseJsonl('{"prompt":"a","completion":"b","task":"t"}', "x")[0]).toEqual({ shape: "completion", prompt: "a", completion: "b", task: "t", line: 1 })
    expect(parseJsonl('{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}', "x")[0]!.shape).toBe("chat")
    expect(parseJsonl('{"prompt":"a","chosen":"b","rejected":"c"}', "x")[0]!.shape).toBe("preference")
    expect(parseJsonl('{"prompt":"a","completion":"b","label":false}', "x")[0]!.shape).toBe("unpaired")
    expect(parseJsonl('\n{"prompt":"a"}\n\n', "x")[0]).toEqual({ shape: "prompt", prompt: "a", line: 2 })
  })

  it("names file, line and field for malformed JSON, missing and wrong fields", () => {
    const p = file("bad.jsonl", '{"prompt":"a","completion":"b"}\n{"prompt":"a", completion}\n')
    let e = errorOf(() => readJsonl(p))
    expect(e.file).toBe(p)
    expect(e.line).toBe(2)
    expect(e.message).toMatch(/bad\.jsonl:2: not valid JSON/)

    e = errorOf(() => parseJsonl('{"prompt":"a","completion":"b"}\n{"prompt":"c"}', "d.jsonl"))
    expect([e.line, e.field]).toEqual([2, "completion"])
    expect(e.message).toMatch(/d\.jsonl:2 field "completion": missing/)

    e = errorOf(() => parseJsonl('{"prompt":"a","chosen":"b"}', "p.jsonl"))
    expect(e.field).toBe("rejected")
    e = errorOf(() => parseJsonl('{"prompt":"a","completion":"b","label":"yes"}', "u.jsonl"))
    expect(e.field).toBe("label")
    e = errorOf(() => parseJsonl('{"messages":[{"role":"user","content":"hi"},{"role":"bot","content":"x"}]}', "c.jsonl"))
    expect(e.field).toBe("messages[1].role")
    e = errorOf(() => parseJsonl('{"prompt":1,"completion":"b"}', "n.jsonl"))
    expect(e.field).toBe("prompt")
    e = errorOf(() => parseJsonl('[1,2]', "arr.jsonl"))
    expect(e.message).toMatch(/JSON object/)
    e = errorOf(() => parseJsonl('{"foo":1}', "k.jsonl"))
    expect(e.message).toMatch(/shape/)
  })

  it("refuses an empty dataset and a missing file", () => {
    expect(errorOf(() => readJsonl(file("empty.jsonl", "\n\n"))).message).toMatch(/empty/)
    expect(errorOf(() => readJsonl(path.join(dir, "nope.jsonl"))).message).toMatch(/ENOENT/)
  })

  it("refuses a prompt longer than the context", () => {
    const recs = parseJsonl('{"prompt":"ab","completion":"c"}\n{"prompt":"abcdefghij","completion":"k"}', "long.jsonl")
    const encode = (s: string) => [...s].map((c) => c.charCodeAt(0))
    expect(() => checkLengths(recs.slice(0, 1), "long.jsonl", encode, 8)).not.toThrow() // 2 + 1 + 2 markers
    const e = errorOf(() => checkLengths(recs, "long.jsonl", encode, 8))
    expect([e.line, e.field]).toEqual([2, "prompt"])
    expect(e.message).toMatch(/is 10 tokens \(12 with the bos\/sep markers\).*context of 8/)
  })

  it("round-trips through writeJsonl", () => {
    const recs = parseJsonl('{"prompt":"a","completion":"b","task":"t"}\n{"prompt":"é","completion":"ü"}', "x")
    const p = path.join(dir, "out.jsonl")
    writeJsonl(p, recs)
    expect(readJsonl(p).map((r) => ({ ...r, line: 0 }))).toEqual(recs.map((r) => ({ ...r, line: 0 })))
  })
})

describe("preparation", () => {
  const mk = (task: string, i: number): DataRecord => ({ shape: "completion", prompt: `${task}${i}`, completion: "x", task, line: i })
  const data = [...Array.from({ length: 90 }, (_, i) => mk("big", i)), ...Array.from({ length: 10 }, (_, i) => mk("small", i))]

  it("drops duplicates and counts them", () => {
    const { records, dropped } = dedupe([...data, mk("big", 3), mk("small", 4)])
    expect(records.length).toBe(100)
    expect(dropped).toBe(2)
  })

  it("splits stratified by task without overlap", () => {
    const s = splitDataset(data, { validation: 0.1, test: 0.2, seed: 1 })
    expect(s.train.length + s.validation.length + s.test.length).toBe(100)
    expect(s.test.filter((r) => r.task === "small").length).toBe(2)
    expect(s.test.filter((r) => r.task === "big").length).toBe(18)
    expect(s.validation.filter((r) => r.task === "small").length).toBe(1)
    const keys = new Set(s.train.map((r) => (r as { prompt: string }).prompt))
    expect([...s.validation, ...s.test].some((r) => keys.has((r as { prompt: string }).prompt))).toBe(false)
    expect(splitDataset(data, { seed: 1 })).toEqual(splitDataset(data, { seed: 1 }))
  })

  it("balances by oversampling and by loss weights", () => {
    const o = oversample(data, "task", 3)
    expect(o.filter((r) => r.task === "small").length).toBe(90)
    const w = lossWeights(data, "task")
    expect(w.get("small")).toBeCloseTo(5)
    expect(w.get("big")! * 90 + w.get("small")! * 10).toBeCloseTo(100)
  })

  it("reports counts, lengths, tasks and duplicates", () => {
    const r = datasetReport("d.jsonl", data, 2, { splits: splitDataset(data) })
    expect(r.records).toBe(100)
    expect(r.tasks).toEqual({ big: 90, small: 10 })
    expect(r.promptLength.max).toBe(6) // "small9"
    const md = reportMarkdown(r)
    expect(md).toMatch(/duplicates dropped \| 2/)
    expect(md).toMatch(/\| small \| 10 \|/)
  })
})
