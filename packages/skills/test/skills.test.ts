import { describe, expect, it } from "vitest"
import {
  SKILLS,
  toCompletion,
  allCapitals,
  capitalFacts,
  check,
  countriesWithoutCapital,
  detectSkill,
  format,
  generate,
  parse,
  reward,
  rewardFor,
  solve,
  splitOf,
  toPrompt,
  maxCompletionLength,
} from "../src/index.ts"

describe("skills", () => {
  it("solves the examples of SKILLS.md", () => {
    expect(solve("add 37 45")).toEqual({ skill: "add", answer: "82" })
    expect(solve("37+45")?.answer).toBe("82")
    expect(solve("reverse kdjw")?.answer).toBe("wjdk")
    expect(solve("kdjw backwards")?.answer).toBe("wjdk")
    expect(solve("sort dbca")?.answer).toBe("abcd")
    expect(solve("dbca sorted")?.answer).toBe("abcd")
    expect(solve("capital of France")?.answer).toBe("Paris")
    expect(solve("France capital")?.answer).toBe("Paris")
    expect(solve("count a in banana")?.answer).toBe("3")
    expect(solve("how many z in banana")?.answer).toBe("0")
    expect(solve("what is love")).toBeUndefined()
  })

  it("keeps UTF-8 capitals and excludes countries without one", () => {
    expect(solve("capital of Brazil")?.answer).toBe("Brasília")
    expect(solve("Moldova capital")?.answer).toBe("Chișinău")
    expect(countriesWithoutCapital()).toEqual(["AQ", "BV", "HM", "MO", "UM"])
    expect(capitalFacts().every((f) => f.capital.length > 0)).toBe(true)
    expect(allCapitals().length).toBe(2 * capitalFacts().length)
  })

  for (const skill of SKILLS) {
    for (const size of ["full", "ci"] as const) {
      it(`${skill}/${size}: seeded, both forms equally common, answers right, formats round-trip`, () => {
        const a = generate(skill, { n: 200, seed: 7, size })
        expect(generate(skill, { n: 200, seed: 7, size })).toEqual(a)
        expect(generate(skill, { n: 200, seed: 8, size })).not.toEqual(a)
        expect(a.filter((e) => e.form === 0).length).toBe(100)
        for (const e of a) {
          expect(detectSkill(e.question)).toBe(skill)
          expect(solve(e.question)?.answer).toBe(e.answer)
          const f = format(e, { size })
          expect(toPrompt(e.question, { size })).toBe(f.prompt)
          expect(parse(e.question, f.completion)).toBe(e.answer)
          expect(reward(e.question, e.answer)).toBe(1)
          expect(rewardFor(skill)(e.question, ` ${e.answer} `)).toBe(1)
          expect(reward(e.question, e.answer + "x")).toBe(0)
        }
      })
    }
  }

  it("held-out questions never appear in training, in either form", () => {
    for (const skill of ["add", "reverse", "sort", "count"] as const) {
      for (const size of ["full", "ci"] as const) {
        const train = generate(skill, { n: 2000, seed: 1, size })
        const test = generate(skill, { n: 300, seed: 2, size, split: "test" })
        const canon = (q: string) => toPrompt(q, { size }).replace(/^(add |reverse |sort |count |how many )/, "").replace(/ (backwards|sorted)=$/, "=").replace("+", " ")
        const seen = new Set(train.map((e) => canon(e.question)))
        for (const e of test) {
          expect(splitOf(e.question)).toBe("test")
          expect(seen.has(canon(e.question))).toBe(false)
        }
      }
    }
  })

  it("uses the internal formats that worked", () => {
    expect(format({ question: "add 37 45", answer: "82" })).toEqual({ prompt: "add 037 045=", completion: "0082" })
    expect(format({ question: "37+45" })).toEqual({ prompt: "037+045=", completion: "0082" })
    expect(format({ question: "3+4" }, { size: "ci" })).toEqual({ prompt: "3+4=", completion: "07" })
    // count and reverse: one form inside, the string right-aligned in fixed places
    expect(format({ question: "count a in banana" })).toEqual({ prompt: "count a in ......banana=", completion: "a000000011223=3" })
    expect(format({ question: "how many a in banana" })).toEqual(format({ question: "count a in banana" }))
    expect(format({ question: "count a in banana" }, { size: "ci" })).toEqual({ prompt: "count a in banana=", completion: "a011223=3" })
    expect(parse("count a in banana", "a000000011223=3")).toBe("3")
    expect(format({ question: "count a in aaaaaaaaaaaa" }).completion).toBe("a123456789ABC=12")
    expect(parse("count a in aaaaaaaaaaaa", format({ question: "count a in aaaaaaaaaaaa" }).completion)).toBe("12")
    expect(format({ question: "count z in abc" }).completion).toBe("z000000000000=0")
    expect(format({ question: "reverse kdjw" })).toEqual({ prompt: "reverse ......kdjw=", completion: "wjdk" })
    expect(format({ question: "kdjw backwards" })).toEqual(format({ question: "reverse kdjw" }))
    expect(format({ question: "reverse abc" }, { size: "ci" })).toEqual({ prompt: "reverse abc=", completion: "cba" })
    expect(format({ question: "sort dbca" })).toEqual({ prompt: "sort dbca=", completion: "abcd" })
    // the bare answer of earlier experts still reads
    expect(parse("count a in banana", "a3")).toBe("3")
    expect(parse("add 37 45", "0082")).toBe("82")
    expect(parse("add 0 0", "0000")).toBe("0")
    expect(() => format({ question: "add 1 1", answer: "3" })).toThrow(/wrong/)
    expect(() => reward("hello", "x")).toThrow(/not a question/)
    expect(check(" 82 ", "82")).toBe(true)
  })

  it("maxCompletionLength bounds every completion, and some completion reaches it", () => {
    for (const size of ["full", "ci"] as const)
      for (const skill of SKILLS) {
        const qs = skill === "capital" ? allCapitals(size) : generate(skill, { n: 3000, seed: 3, split: "train", size })
        const longest = Math.max(...qs.map((e) => [...format(e, { size }).completion].length))
        const extreme = skill === "count" ? [...format({ question: `count a in ${"a".repeat(size === "ci" ? 6 : 12)}` }, { size }).completion].length : longest
        expect(Math.max(longest, extreme), `${skill} ${size}`).toBe(maxCompletionLength(skill, size))
      }
  })

  it("turns any plain answer, right or wrong, back into the model's completion (toCompletion ∘ parse = id)", () => {
    expect(toCompletion("add 37 45", "81")).toBe("0081")
    expect(toCompletion("3+4", "8", { size: "ci" })).toBe("08")
    expect(toCompletion("how many a in banana", "2")).toBe("a000000011223=2")
    expect(toCompletion("reverse abc", "cab")).toBe("cab")
    expect(toCompletion("add 37 45", "eighty")).toBe("eighty") // not the skill's shape: unchanged
    expect(toCompletion("hello", " x ")).toBe("x")
    for (const s of SKILLS)
      for (const e of s === "capital" ? allCapitals().slice(0, 20) : generate(s, { n: 50, seed: 9 })) {
        const f = format(e)
        expect(toCompletion(e.question, parse(e.question, f.completion))).toBe(f.completion)
      }
  })

  it("ci sizes are small", () => {
    const ci = generate("add", { n: 500, seed: 3, size: "ci", split: "test", unique: true })
    expect(ci.length).toBeLessThan(100)
    expect(ci.every((e) => /^(add \d \d|\d\+\d)$/.test(e.question))).toBe(true)
    expect(allCapitals("ci").length).toBe(24)
  })
})
