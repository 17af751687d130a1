// The aggregator model's prompt: what the router sends (formatAggregatorPrompt) becomes the compact
// in-model form that fits the base's context, keeps the vote, and puts the best-supported first.
import { describe, expect, it } from "vitest"
import { formatAggregatorPrompt } from "@moa/router"
import { allCapitals } from "@moa/skills"
import { ANSWER_CHARS, aggregatorModelPrompt, aggregatorTarget, aggregatorView, parseWirePrompt, readAggregatorOutput, tally } from "../aggregator.ts"

describe("aggregator prompt", () => {
  it("reads the router's wire prompt back", () => {
    const wire = formatAggregatorPrompt("reverse kdjw", ["wjdk", "wjkd", "a | b"])
    expect(parseWirePrompt(wire)).toEqual({ question: "reverse kdjw", candidates: ["wjdk", "wjkd", "a / b"] })
    expect(parseWirePrompt("reverse kdjw")).toBeUndefined()
  })

  it("counts distinct candidates, most frequent first, ties in arrival order (the gate's order in moa)", () => {
    expect(tally(["b", "a", "a ", "c", "b", "a"]).map((t) => [t.text, t.n])).toEqual([["a", 3], ["b", 2], ["c", 1]])
    expect(tally(["x", "y", "z"]).map((t) => t.text)).toEqual(["x", "y", "z"])
    expect(aggregatorModelPrompt("reverse kdjw", ["wjkd", "wjdk", "wjdk", "wjdk"])).toBe("reverse kdjw|1 wjdk(3)|2 wjkd(1)=")
    // separators inside candidates cannot fake structure, but the answer picked is the candidate as sent
    const v = aggregatorView("capital of X", ["Y", "Saint (X)|Z"])
    expect(v.prompt).toBe("capital of X|1 Y(1)|2 Saint /X//Z(1)=")
    expect(readAggregatorOutput(v, "2")).toBe("Saint (X)|Z")
  })

  it("the model picks by number or writes its own answer after 0; targets say which", () => {
    const v = aggregatorView("add 12 30", ["41", "41", "43"])
    expect(v.shown).toEqual(["41", "43"])
    expect(aggregatorTarget(v, "43")).toBe("2")
    expect(aggregatorTarget(v, "42")).toBe("042")
    expect(readAggregatorOutput(v, "1")).toBe("41")
    expect(readAggregatorOutput(v, "042")).toBe("42")
    expect(readAggregatorOutput(v, "7")).toBe("7") // no 7th candidate: taken as written
  })

  it("always fits the context with room for the longest answer, keeping at least one candidate", () => {
    expect(Math.max(...allCapitals().map((c) => Buffer.byteLength(c.answer)))).toBeLessThanOrEqual(ANSWER_CHARS.capital)
    const longest = allCapitals().reduce((a, b) => (Buffer.byteLength(b.question) > Buffer.byteLength(a.question) ? b : a))
    const junk = Array.from({ length: 9 }, (_, i) => `Ñoño candidate number ${i} ${"é".repeat(i)}`)
    for (const ctx of [64, 96]) {
      for (const [q, skill] of [[longest.question, "capital"], ["reverse abcdefghij", "reverse"], ["add 999 999", "add"]] as const) {
        const p = aggregatorModelPrompt(q, junk, ctx)
        // bos + prompt + sep + the longest answer of the skill + eos, in UTF-8 bytes (an upper bound on tokens)
        expect(Buffer.byteLength(p) + 3 + 1 + ANSWER_CHARS[skill]).toBeLessThanOrEqual(ctx)
        expect(p).toMatch(/\|.+=$/)
        expect(p.endsWith("=")).toBe(true)
      }
    }
  })
})
