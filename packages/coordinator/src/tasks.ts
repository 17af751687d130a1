/**
 * Where a round's prompts come from and how an answer is verified: a skill of packages/skills
 * (SKILLS.md; verifiable reward, exact match) or the toy `rev` task the expert's tiny test
 * model speaks. Training prompts and held-out prompts never overlap.
 */
import { detectSkill, format, generate, parse, reward, type SkillName, type Size } from "@moa/skills"
import type { Task } from "./logic.ts"

export interface TaskSpec {
  readonly name: string
  /** n tasks of a split; the same (split, n, seed) gives the same tasks */
  readonly tasks: (split: "train" | "test", n: number, seed: number) => Task[]
  /** 1 when `completion` is a right answer to `task`, else 0 (throws when it cannot tell) */
  readonly verify: (task: Task, completion: string) => number
  /** A user's question (e.g. from the console's feedback) as this task's prompt; undefined when it is not a question of this task */
  readonly fromQuestion?: (question: string) => Task | undefined
}

/** `question` as a task of `skill` in the model's format, or undefined when it is another skill's (or no skill's) question. */
const skillQuestion = (skill: SkillName, size: Size, plain: boolean) => (question: string): Task | undefined => {
  const q = question.trim()
  if (detectSkill(q) !== skill) return undefined
  try {
    return { question: q, prompt: plain ? q : format({ question: q }, { size }).prompt }
  } catch {
    return undefined // e.g. too long for this size's format
  }
}

/** A skill of SKILLS.md: model prompts in the skill's format, reward = exact match of the parsed answer. */
export const skillTasks = (skill: SkillName, size: Size = "ci"): TaskSpec => ({
  name: `${skill}${size === "ci" ? ":ci" : ""}`,
  tasks: (split, n, seed) =>
    generate(skill, { n, seed, split, size, unique: true }).map((e) => {
      const f = format(e, { size })
      return { question: e.question, prompt: f.prompt, reference: f.completion }
    }),
  verify: (t, c) => reward(t.question, parse(t.question, c)),
  fromQuestion: skillQuestion(skill, size, false),
})

/**
 * A skill of SKILLS.md for experts that speak plain questions and answers (the skills cluster's
 * experts translate to their model's format themselves): prompt = the question, reference = the
 * answer, reward = exact match. Their `train` verb turns the plain pairs back into the model's
 * format (`@moa/skills` toPrompt / toCompletion).
 */
export const plainSkillTasks = (skill: SkillName, size: Size = "full"): TaskSpec => ({
  name: `${skill}${size === "ci" ? ":ci" : ""}:plain`,
  tasks: (split, n, seed) => generate(skill, { n, seed, split, size, unique: true }).map((e) => ({ question: e.question, prompt: e.question, reference: e.answer })),
  verify: (t, c) => reward(t.question, c),
  fromQuestion: skillQuestion(skill, size, true),
})

/** The toy task of @moa/expert's tiny checkpoint: `rev <word>` → the word reversed (letters a–h, 2–5 long). */
export const revTasks = (): TaskSpec => ({
  name: "rev",
  tasks: (split, n, seed) => {
    let s = (seed * 2654435761 + (split === "test" ? 77 : 0)) >>> 0 || 1
    const r = () => ((s = (s * 1103515245 + 12345) >>> 0), s / 2 ** 32)
    const out: Task[] = []
    const seen = new Set<string>()
    let guard = 0
    while (out.length < n && guard++ < n * 100) {
      const len = 2 + Math.floor(r() * 4)
      const w = Array.from({ length: len }, () => "abcdefgh"[Math.floor(r() * 8)]).join("")
      // held-out words: a hash of the word decides the split, so train and test never share one
      const h = [...w].reduce((a, ch) => (a * 31 + ch.charCodeAt(0)) % 1000, 7)
      if ((h < 250) !== (split === "test") || seen.has(w)) continue
      seen.add(w)
      out.push({ question: `rev ${w}`, prompt: `rev ${w}`, reference: [...w].reverse().join("") })
    }
    return out
  },
  verify: (t, c) => {
    const m = /^rev ([a-z]+)$/.exec(t.question)
    if (!m) throw new Error(`"${t.question}" is not a rev question`)
    return c.trim() === [...m[1]!].reverse().join("") ? 1 : 0
  },
  fromQuestion: (q) => (/^rev [a-z]+$/.test(q.trim()) ? { question: q.trim(), prompt: q.trim() } : undefined),
})

/**
 * A task by name: `rev`, a skill in the model's own format (`sort` CI size, `sort:full`), or a
 * skill in plain questions and answers for experts that translate themselves (`sort:plain`,
 * full size: the skills cluster of examples/skills).
 */
export const taskSpecOf = (name: string): TaskSpec => {
  if (name === "rev") return revTasks()
  const [skill, size, ...rest] = name.split(":")
  const skills = ["add", "reverse", "sort", "capital", "count"]
  if (!skills.includes(skill!) || rest.length > 0 || (size !== undefined && !["full", "ci", "plain"].includes(size)))
    throw new Error(`unknown task "${name}": use rev or one of ${skills.join(", ")}, optionally with ":full" (full size), ":ci" (the default) or ":plain" (plain questions, full size)`)
  if (size === "plain") return plainSkillTasks(skill as SkillName)
  return skillTasks(skill as SkillName, size === "full" ? "full" : "ci")
}

/**
 * `--experts` syntax: `name[=task][@adapter]` separated by commas, e.g. `sort=sort,rev=rev@rev`.
 * The task defaults to the expert's name (a skill or `rev`), the adapter to the expert's name.
 */
export const parseExperts = (spec: string): { name: string; adapter?: string; tasks: TaskSpec }[] =>
  spec
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const m = /^([A-Za-z0-9_-]+)(?:=([a-z:]+))?(?:@([A-Za-z0-9_-]+))?$/.exec(s)
      if (!m) throw new Error(`--experts: "${s}" is not name[=task][@adapter] (e.g. sort=sort or rev=rev@rev)`)
      return { name: m[1]!, ...(m[3] ? { adapter: m[3] } : {}), tasks: taskSpecOf(m[2] ?? m[1]!) }
    })
