import { describe, expect, it } from "vitest"
import { compareMarkdown, errorsMarkdown, scoreAnswers } from "../src/eval/report.ts"
import { lossCurveSvg, niceTicks, parseLog, seriesFromLog } from "../src/eval/plot.ts"

describe("evaluation report", () => {
  it("scores exact match per task and compares models in one table", () => {
    const a = scoreAnswers("base", [
      { task: "add", question: "1+1", expected: "2", got: " 2 " },
      { task: "add", question: "1+2", expected: "3", got: "4" },
      { task: "sort", question: "sort ba", expected: "ab", got: "ab" },
    ], { loss: Math.log(2) })
    expect(a.accuracy).toBeCloseTo(2 / 3)
    expect(a.perTask.add).toEqual({ n: 2, correct: 1, accuracy: 0.5 })
    expect(a.perplexity).toBeCloseTo(2)
    const b = scoreAnswers("lora", [{ task: "add", question: "1+1", expected: "2", got: "2" }, { task: "add", question: "1+2", expected: "3", got: "3" }])
    const md = compareMarkdown([a, b], { lora: { "trainable params": "1,024" } })
    expect(md.split("\n")[0]).toBe("| model | add (n=2) | sort (n=1) | overall | loss | perplexity | trainable params |")
    expect(md).toContain("| base | 50.0% | 100.0% | 66.7% | 0.6931 | 2.000 | – |")
    expect(md).toContain("| lora | 100.0% | – | 100.0% | – | – | 1,024 |")
    expect(errorsMarkdown(a)).toContain("| add | `1+2` | `3` | `4` |")
  })

  it("draws a loss curve as SVG from a training log", () => {
    const log = parseLog('{"step":0,"loss":3}\n{"step":10,"loss":2,"valLoss":2.5}\n\n{"step":20,"loss":1}\n', "train.jsonl")
    const svg = lossCurveSvg(seriesFromLog(log), { title: "lora <add>" })
    expect(svg.startsWith("<svg")).toBe(true)
    expect(svg).toContain("lora &lt;add&gt;")
    expect((svg.match(/<path /g) ?? []).length).toBe(2)
    expect(svg).toContain("validation loss")
    expect(() => parseLog('{"step":0}\n{oops', "t.jsonl")).toThrow(/t\.jsonl:2/)
    expect(() => lossCurveSvg([])).toThrow(/no finite points/)
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1])
  })
})
