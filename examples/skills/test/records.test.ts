// The skills cluster's experts speak plain questions and answers; the coordinator builds its
// preference data from those, and the experts' `train` verb turns it back into what their models
// learn from (the skill's own format): every record shape of the train verb, and records that are
// already in the model's format pass unchanged.
import { describe, expect, it } from "vitest"
import { format, parse } from "@moa/skills"
import { modelPrompt, toModelRecord, userAnswer } from "../cluster.ts"

describe("skills cluster: plain ↔ model format", () => {
  it("maps every record shape of the train verb", () => {
    expect(toModelRecord({ prompt: "add 37 45", chosen: "82", rejected: "81" })).toEqual({ prompt: "add 037 045=", chosen: "0082", rejected: "0081" })
    expect(toModelRecord({ prompt: "how many a in banana", completion: "2", label: false })).toEqual({ prompt: "count a in ......banana=", completion: "a000000011223=2", label: false })
    expect(toModelRecord({ prompt: "37+45", completions: ["82", "8", "x"], rewards: [1, 0, 0] })).toEqual({ prompt: "037+045=", completions: ["0082", "0008", "x"], rewards: [1, 0, 0] })
    expect(toModelRecord({ prompt: "reverse abc", completion: "cba" })).toEqual({ prompt: "reverse .......abc=", completion: "cba" })
    // already the model's format, or not a question of a skill: unchanged
    const raw = { prompt: "add 037 045=", chosen: "0082", rejected: "0081" }
    expect(toModelRecord(raw)).toBe(raw)
    expect(toModelRecord({ prompt: "hello", completion: "x" })).toEqual({ prompt: "hello", completion: "x" })
    expect(toModelRecord(null)).toBe(null)
  })

  it("agrees with the format the experts were trained on and the answers users see", () => {
    for (const q of ["add 5 917", "12+3", "count z in pizza", "how many z in pizza", "reverse kdjw", "kdjw backwards", "sort dcba", "capital of France"]) {
      const f = format({ question: q })
      expect(modelPrompt(q)).toBe(f.prompt)
      const plain = userAnswer(q, f.completion)
      expect(plain).toBe(parse(q, f.completion))
      expect((toModelRecord({ prompt: q, completion: plain }) as { completion: string }).completion).toBe(f.completion)
    }
  })
})
