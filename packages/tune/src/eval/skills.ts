/**
 * Evaluating a model on the skills benchmark: each question goes through the skill's internal
 * prompt format, the model answers greedily, the completion is parsed back to the plain answer
 * and compared exactly (SKILLS.md).
 */
import { type Example, type Size, format, parse, toPrompt } from "@moa/skills"
import type { TuneModel, TuneTokenizer } from "../model.ts"
import { evalLoss } from "../sft.ts"
import { generate } from "@moa/model"
import { type EvalResult, scoreAnswers } from "./report.ts"

export const evaluateSkills = (
  name: string,
  model: TuneModel,
  tok: TuneTokenizer,
  examples: ReadonlyArray<Example>,
  opts: { size?: Size; maxNew?: number; withLoss?: boolean } = {},
): EvalResult => {
  const size = opts.size ?? "full"
  const prompts = examples.map((e) => toPrompt(e.question, { size }))
  const completions = generate(model, tok, prompts, { maxTokens: opts.maxNew ?? 16, temperature: 0 }).map((g) => g.text)
  const items = examples.map((e, i) => ({ task: e.skill, question: e.question, expected: e.answer, got: parse(e.question, completions[i]!) }))
  const loss = opts.withLoss === false ? undefined : evalLoss(model, tok, examples.map((e) => format(e, { size }))).loss
  return scoreAnswers(name, items, loss !== undefined ? { loss } : {})
}
