/**
 * The five skills of SKILLS.md: generators with both question forms equally common, a solver
 * (so anyone can check an answer without a model), held-out splits by hashing the operands,
 * and the model-internal formats that worked (zero-padded add, count answer led by the letter).
 */
import { capitalFacts, ciCapitalFacts, factByCountry } from "./capital.ts"
import { fnv1a, makeRng, pick, randInt } from "./rng.ts"

export type SkillName = "add" | "reverse" | "sort" | "capital" | "count"
export const SKILLS: ReadonlyArray<SkillName> = ["add", "reverse", "sort", "capital", "count"]

/** "full" is the SKILLS.md range; "ci" is the small variant a tiny model learns in well under a minute. */
export type Size = "full" | "ci"
export type Split = "train" | "test"

export interface Example {
  readonly skill: SkillName
  readonly question: string
  /** The plain answer a user sees. */
  readonly answer: string
  /** Which of the two question forms (0 = verb first, 1 = verb last). */
  readonly form: 0 | 1
}

/** What the model is trained on: `prompt + completion` (the trainer adds the end marker). */
export interface Formatted {
  readonly prompt: string
  readonly completion: string
}

type Ops = { readonly a: number; readonly b: number } | { readonly s: string } | { readonly c: string; readonly s: string } | { readonly country: string }

interface SkillDef {
  readonly name: SkillName
  readonly sample: (rng: () => number, size: Size) => Ops
  readonly question: (ops: Ops, form: 0 | 1) => string
  readonly parseQuestion: (q: string) => { ops: Ops; form: 0 | 1 } | undefined
  readonly solve: (ops: Ops) => string | undefined
  /** Hold-out key: questions with the same key always fall in the same split. */
  readonly key: (ops: Ops) => string
  readonly prompt: (ops: Ops, form: 0 | 1, size: Size) => string
  readonly completion: (ops: Ops, size: Size) => string
  readonly parseCompletion: (completion: string) => string
}

const LETTERS = "abcdefghijklmnopqrstuvwxyz"
const letters = (rng: () => number, alphabet: string, lo: number, hi: number) => {
  const n = randInt(rng, lo, hi)
  let s = ""
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(rng() * alphabet.length)]
  return s
}
const pad = (n: number, w: number) => String(n).padStart(w, "0")
const stripZeros = (s: string) => s.replace(/^0+(?=\d)/, "")

// ---- add -------------------------------------------------------------------------------------
const addWidth = (size: Size) => (size === "ci" ? { op: 1, sum: 2 } : { op: 3, sum: 4 })
const add: SkillDef = {
  name: "add",
  sample: (rng, size) => (size === "ci" ? { a: randInt(rng, 0, 9), b: randInt(rng, 0, 9) } : { a: randInt(rng, 0, 999), b: randInt(rng, 0, 999) }),
  question: (o, form) => {
    const { a, b } = o as { a: number; b: number }
    return form === 0 ? `add ${a} ${b}` : `${a}+${b}`
  },
  parseQuestion: (q) => {
    let m = /^add (\d+) (\d+)$/.exec(q)
    if (m) return { ops: { a: Number(m[1]), b: Number(m[2]) }, form: 0 }
    m = /^(\d+) ?\+ ?(\d+)$/.exec(q)
    if (m) return { ops: { a: Number(m[1]), b: Number(m[2]) }, form: 1 }
    return undefined
  },
  solve: (o) => {
    const { a, b } = o as { a: number; b: number }
    return String(a + b)
  },
  key: (o) => {
    const { a, b } = o as { a: number; b: number }
    return `add:${a},${b}`
  },
  // SKILLS.md recipe: operands and sum zero-padded (`add 037 045=0082`); without it add stalls at 80–88%.
  prompt: (o, form, size) => {
    const { a, b } = o as { a: number; b: number }
    const w = addWidth(size).op
    const wa = Math.max(w, String(a).length)
    const wb = Math.max(w, String(b).length)
    return form === 0 ? `add ${pad(a, wa)} ${pad(b, wb)}=` : `${pad(a, wa)}+${pad(b, wb)}=`
  },
  completion: (o, size) => {
    const { a, b } = o as { a: number; b: number }
    return pad(a + b, addWidth(size).sum)
  },
  parseCompletion: (c) => stripZeros(c.trim()),
}

// ---- reverse / sort --------------------------------------------------------------------------
const stringSkill = (
  name: "reverse" | "sort",
  verbLast: string,
  f: (s: string) => string,
  ci: { alphabet: string; lo: number; hi: number },
): SkillDef => ({
  name,
  sample: (rng, size) => ({ s: size === "ci" ? letters(rng, ci.alphabet, ci.lo, ci.hi) : letters(rng, LETTERS, 3, 10) }),
  question: (o, form) => {
    const { s } = o as { s: string }
    return form === 0 ? `${name} ${s}` : `${s} ${verbLast}`
  },
  parseQuestion: (q) => {
    let m = new RegExp(`^${name} ([a-z]+)$`).exec(q)
    if (m) return { ops: { s: m[1]! }, form: 0 }
    m = new RegExp(`^([a-z]+) ${verbLast}$`).exec(q)
    if (m) return { ops: { s: m[1]! }, form: 1 }
    return undefined
  },
  solve: (o) => f((o as { s: string }).s),
  key: (o) => `${name}:${(o as { s: string }).s}`,
  // reverse (full size): one form inside, the string right-aligned in 10 places (`reverse
  // ......kdjw=`), so answer letter j always reads the same position, whatever the length. With
  // the question as it is typed, where it reads moved with the length, and a LoRA adapter on a base
  // that had not learned that reached 42.5% in 800 steps.
  prompt: (o, form, size) =>
    name === "reverse" && size === "full" ? `reverse ${(o as { s: string }).s.padStart(REVERSE_WIDTH, ".")}=` : `${stringSkill(name, verbLast, f, ci).question(o, form)}=`,
  completion: (o) => f((o as { s: string }).s),
  parseCompletion: (c) => c.trim(),
})
const REVERSE_WIDTH = 10
const reverse = stringSkill("reverse", "backwards", (s) => [...s].reverse().join(""), { alphabet: "abcd", lo: 3, hi: 4 })
const sort = stringSkill("sort", "sorted", (s) => [...s].sort().join(""), { alphabet: "abc", lo: 3, hi: 5 })

// ---- capital ---------------------------------------------------------------------------------
const capital: SkillDef = {
  name: "capital",
  sample: (rng, size) => ({ country: pick(rng, size === "ci" ? ciCapitalFacts() : capitalFacts()).country }),
  question: (o, form) => {
    const { country } = o as { country: string }
    return form === 0 ? `capital of ${country}` : `${country} capital`
  },
  parseQuestion: (q) => {
    let m = /^capital of (.+)$/.exec(q)
    if (m && factByCountry(m[1]!)) return { ops: { country: factByCountry(m[1]!)!.country }, form: 0 }
    m = /^(.+) capital$/.exec(q)
    if (m && factByCountry(m[1]!)) return { ops: { country: factByCountry(m[1]!)!.country }, form: 1 }
    return undefined
  },
  solve: (o) => factByCountry((o as { country: string }).country)?.capital,
  key: (o) => `capital:${(o as { country: string }).country}`,
  prompt: (o, form) => `${capital.question(o, form)}=`,
  completion: (o) => factByCountry((o as { country: string }).country)!.capital,
  parseCompletion: (c) => c.trim(),
}

// ---- count -----------------------------------------------------------------------------------
const countOf = (c: string, s: string) => [...s].filter((x) => x === c).length
/**
 * A full-size count question. With the letter drawn uniformly and the string from all 26 letters,
 * 72% of the answers were 0 and almost none above 1: "always 0" scored 71.5% and the experts
 * learned exactly that. So half of the strings come from a small alphabet of 2–5 letters (letters
 * repeat: counts up to 12), and the letter is one of the string's 80% of the time (else any
 * letter, so 0 stays a real answer).
 */
const countSample = (rng: () => number): { c: string; s: string } => {
  const small = rng() < 0.5
  const alphabet = small ? [...LETTERS].sort(() => rng() - 0.5).slice(0, 2 + Math.floor(rng() * 4)).join("") : LETTERS
  const s = letters(rng, alphabet, 3, 12)
  const c = rng() < 0.8 ? s[Math.floor(rng() * s.length)]! : LETTERS[Math.floor(rng() * 26)]!
  return { c, s }
}
const count: SkillDef = {
  name: "count",
  sample: (rng, size) =>
    size === "ci"
      ? { c: pick(rng, [..."abc"]), s: letters(rng, "abc", 3, 6) }
      : countSample(rng),
  question: (o, form) => {
    const { c, s } = o as { c: string; s: string }
    return form === 0 ? `count ${c} in ${s}` : `how many ${c} in ${s}`
  },
  parseQuestion: (q) => {
    let m = /^count ([a-z]) in ([a-z]+)$/.exec(q)
    if (m) return { ops: { c: m[1]!, s: m[2]! }, form: 0 }
    m = /^how many ([a-z]) in ([a-z]+)$/.exec(q)
    if (m) return { ops: { c: m[1]!, s: m[2]! }, form: 1 }
    return undefined
  },
  solve: (o) => {
    const { c, s } = o as { c: string; s: string }
    return String(countOf(c, s))
  },
  key: (o) => {
    const { c, s } = o as { c: string; s: string }
    return `count:${c}:${s}`
  },
  // one form inside, the string right-aligned in 12 places (CI: 6): `count a in ......banana=`
  prompt: (o, _form, size) => {
    const { c, s } = o as { c: string; s: string }
    return `count ${c} in ${s.padStart(countWidth(size), ".")}=`
  },
  // SKILLS.md's recipe repeats the letter first (`a3`); on a 4-layer base even that stayed at the
  // "always 0" rate (71.5%), so the expert also writes a scratchpad: the running count after each
  // of the 12 places, one character each (0-9, then A B C for 10-12), then `=` and the answer:
  // `count a in ......banana=a000000011223=3`. Each scratch step is local (the letter at a fixed
  // place, the step before), where the bare answer needed all the matches at once.
  completion: (o, size) => {
    const { c, s } = o as { c: string; s: string }
    return `${c}${countScratch(c, s.padStart(countWidth(size), "."))}=${countOf(c, s)}`
  },
  parseCompletion: (c) => {
    const m = /=\s*(\d+)\s*$/.exec(c)
    return m ? m[1]! : c.trim().replace(/^[a-z]/, "")
  },
}
const RUNNING = "0123456789ABC"
const countWidth = (size: Size) => (size === "ci" ? 6 : 12)
/** The running count of `c` after each letter of `s`, one character a step. */
const countScratch = (c: string, s: string): string => {
  let n = 0
  return [...s].map((x) => RUNNING[Math.min((n += x === c ? 1 : 0), RUNNING.length - 1)]).join("")
}

const DEFS: Record<SkillName, SkillDef> = { add, reverse, sort, capital, count }

export const isSkill = (s: string): s is SkillName => (SKILLS as ReadonlyArray<string>).includes(s)
const def = (skill: SkillName): SkillDef => {
  const d = DEFS[skill]
  if (!d) throw new Error(`unknown skill "${String(skill)}": expected one of ${SKILLS.join(", ")}`)
  return d
}

/** Trim and collapse inner whitespace: how every question is read. */
export const normalizeQuestion = (q: string): string => q.trim().replace(/\s+/g, " ")

/** Which skill a question belongs to (by its form), with its operands, or undefined. */
const parseAny = (question: string, skill?: SkillName): { def: SkillDef; ops: Ops; form: 0 | 1 } | undefined => {
  const q = normalizeQuestion(question)
  for (const d of skill ? [def(skill)] : SKILLS.map(def)) {
    const p = d.parseQuestion(q)
    if (p) return { def: d, ...p }
  }
  return undefined
}

/** The skill a question is written in, or undefined when it matches none of the ten forms. */
export const detectSkill = (question: string): SkillName | undefined => parseAny(question)?.def.name

/** The one right answer to a question, or undefined when it is not a question of any skill. */
export const solve = (question: string): { skill: SkillName; answer: string } | undefined => {
  const p = parseAny(question)
  if (!p) return undefined
  const answer = p.def.solve(p.ops)
  return answer === undefined ? undefined : { skill: p.def.name, answer }
}

/** Exact match after trimming spaces (SKILLS.md). */
export const check = (expected: string, got: string): boolean => expected.trim() === got.trim()

/**
 * Verifiable reward for RL and preference rounds: 1 when `answer` is the right answer to
 * `question` (computed by the solver, no reference needed), else 0. A question that belongs
 * to no skill throws, since nothing can be verified.
 */
export const reward = (question: string, answer: string): number => {
  const s = solve(question)
  if (!s) throw new Error(`reward: "${question}" is not a question of any skill (${SKILLS.join(", ")}); nothing to verify`)
  return check(s.answer, answer) ? 1 : 0
}

/** Per-skill reward functions with the skill fixed (the question must be of that skill). */
export const rewardFor =
  (skill: SkillName) =>
  (question: string, answer: string): number => {
    const p = parseAny(question, skill)
    if (!p) throw new Error(`reward(${skill}): "${question}" is not a ${skill} question`)
    return check(p.def.solve(p.ops) ?? "\u0000", answer) ? 1 : 0
  }

export interface HoldOut {
  /** Fraction of the operand space reserved for the test split (default 0.2). */
  readonly testFraction?: number
}

/**
 * Which split a question belongs to, decided by hashing its operands (not its form), so a
 * test question is never a training question in either form. Capital is the exception:
 * the facts are the task (recall over all of them), so every capital question is in both.
 */
export const splitOf = (question: string, opts: HoldOut = {}): Split | "both" => {
  const p = parseAny(question)
  if (!p) throw new Error(`splitOf: "${question}" is not a question of any skill`)
  return splitOfOps(p.def, p.ops, opts.testFraction ?? 0.2)
}
const splitOfOps = (d: SkillDef, ops: Ops, testFraction: number): Split | "both" => {
  if (d.name === "capital") return "both"
  return fnv1a(d.key(ops)) / 4294967296 < testFraction ? "test" : "train"
}

export interface GenerateOptions extends HoldOut {
  readonly n: number
  readonly seed?: number
  readonly split?: Split
  readonly size?: Size
  /** No question twice (stops early when the split's space is smaller than n). */
  readonly unique?: boolean
}

/**
 * `n` examples of one skill, forms alternating (exactly half each), operands drawn with a seeded
 * RNG and kept only when they hash into the requested split. For capital, `split` is ignored and
 * with `unique` the result is every fact in both forms (recall over all of them).
 */
export const generate = (skill: SkillName, opts: GenerateOptions): Example[] => {
  const d = def(skill)
  const size = opts.size ?? "full"
  const split = opts.split ?? "train"
  const tf = opts.testFraction ?? 0.2
  if (!(Number.isInteger(opts.n) && opts.n >= 0)) throw new Error(`generate: n must be a non-negative integer, got ${opts.n}`)
  if (!(tf > 0 && tf < 1)) throw new Error(`generate: testFraction must be in (0, 1), got ${tf}`)
  const rng = makeRng((opts.seed ?? 0) ^ fnv1a(`${skill}:${split}:${size}`))
  const out: Example[] = []
  const seen = new Set<string>()
  let attempts = 0
  const maxAttempts = opts.n * 200 + 1000
  while (out.length < opts.n && attempts++ < maxAttempts) {
    const ops = d.sample(rng, size)
    const s = splitOfOps(d, ops, tf)
    if (s !== "both" && s !== split) continue
    const form = (out.length % 2) as 0 | 1
    const question = d.question(ops, form)
    if (opts.unique) {
      if (seen.has(question)) continue
      seen.add(question)
    }
    out.push({ skill, question, answer: d.solve(ops)!, form })
  }
  if (!opts.unique && out.length < opts.n) throw new Error(`generate(${skill}): could only draw ${out.length} of ${opts.n} ${split} questions`)
  return out
}

/** Every fact of the capital skill in both forms (the recall set). */
export const allCapitals = (size: Size = "full"): Example[] =>
  (size === "ci" ? ciCapitalFacts() : capitalFacts()).flatMap((f) =>
    ([0, 1] as const).map((form) => ({ skill: "capital" as const, question: capital.question({ country: f.country }, form), answer: f.capital, form })),
  )

/** A mixture: `n` examples of each skill, interleaved by a seeded shuffle. */
export const generateMix = (skills: ReadonlyArray<SkillName>, opts: GenerateOptions): Example[] => {
  const all = skills.flatMap((s) => generate(s, opts))
  const rng = makeRng((opts.seed ?? 0) ^ 0x9e3779b9)
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1))
    ;[all[i], all[j]] = [all[j]!, all[i]!]
  }
  return all
}

export interface FormatOptions {
  readonly size?: Size
}

/** The model-internal prompt for a question (what the expert feeds its model). */
export const toPrompt = (question: string, opts: FormatOptions = {}): string => {
  const p = parseAny(question)
  if (!p) throw new Error(`toPrompt: "${question}" is not a question of any skill (${SKILLS.join(", ")})`)
  return p.def.prompt(p.ops, p.form, opts.size ?? "full")
}

/** `{prompt, completion}` for training, in the format that worked for that skill. */
export const format = (ex: { question: string; answer?: string }, opts: FormatOptions = {}): Formatted => {
  const p = parseAny(ex.question)
  if (!p) throw new Error(`format: "${ex.question}" is not a question of any skill (${SKILLS.join(", ")})`)
  const size = opts.size ?? "full"
  const completion = p.def.completion(p.ops, size)
  if (ex.answer !== undefined && p.def.parseCompletion(completion) !== ex.answer.trim())
    throw new Error(`format: the answer "${ex.answer}" to "${ex.question}" is wrong (the right answer is "${p.def.parseCompletion(completion)}")`)
  return { prompt: p.def.prompt(p.ops, p.form, size), completion }
}

/**
 * The model-internal completion for any plain answer to `question`, right or wrong (the inverse
 * of `parse`): `add 37 45` + `81` → `0081`, `count a in banana` + `2` → `a000000011223=2`; plain skills and
 * answers that do not fit the skill's shape pass unchanged. Preference data from a cluster whose
 * experts speak plain answers is turned back into what their models train on with it.
 */
export const toCompletion = (question: string, answer: string, opts: FormatOptions = {}): string => {
  const p = parseAny(question)
  const a = answer.trim()
  if (!p) return a
  const size = opts.size ?? "full"
  if (p.def.name === "add" && /^\d+$/.test(a)) return pad(Number(a), addWidth(size).sum)
  if (p.def.name === "count" && /^\d+$/.test(a)) {
    const { c, s } = p.ops as { c: string; s: string }
    return `${c}${countScratch(c, s.padStart(countWidth(size), "."))}=${a}`
  }
  return a
}

/**
 * The most characters a model completion of `skill` can have, in the formats above (add: the
 * padded sum; reverse/sort: the longest string; capital: the longest capital, "Edinburgh of the
 * Seven Seas" = 27; count: letter + scratchpad + `=` + a two-digit count = 16). Generation budgets
 * derive from it: a fixed 24 once made 2 of the 494 capital questions unanswerable.
 */
export const maxCompletionLength = (skill: SkillName, size: Size = "full"): number => {
  switch (skill) {
    case "add": return addWidth(size).sum
    case "reverse": return size === "ci" ? 4 : 10
    case "sort": return size === "ci" ? 5 : 10
    case "capital": return Math.max(...(size === "ci" ? ciCapitalFacts() : capitalFacts()).map((f) => [...f.capital].length))
    case "count": return 1 + countWidth(size) + 1 + String(countWidth(size)).length
  }
}

/** The plain answer a user sees, read from the model's completion for `question`'s skill. */
export const parse = (question: string, completion: string): string => {
  const p = parseAny(question)
  if (!p) return completion.trim()
  return p.def.parseCompletion(completion)
}
