// Config objects per algorithm, TRL style: one plain object each, filled with defaults and
// validated in one place so a bad field fails early with its name in the message.

/** A config field has a bad value (or is unknown). `field` names it; the message says what to do. */
export class PreferenceConfigError extends Error {
  override readonly name = "PreferenceConfigError"
  constructor(
    readonly config: string,
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${config}.${field}: ${reason}`)
  }
}

/** Fields every single-process preference trainer reads. */
export interface TrainingArgs {
  /** Adam learning rate. */
  learningRate: number
  /** Examples (pairs, labelled completions or prompts) per optimizer step. */
  batchSize: number
  /** Passes over the dataset (ignored when maxSteps is set). */
  numEpochs: number
  /** Stop after this many optimizer steps (0 = use numEpochs). */
  maxSteps: number
  /** Clip the global gradient norm to this value (0 = no clipping). */
  maxGradNorm: number
  /** Seed for shuffling and sampling. */
  seed: number
}

export const trainingDefaults: TrainingArgs = {
  learningRate: 1e-3,
  batchSize: 8,
  numEpochs: 1,
  maxSteps: 0,
  maxGradNorm: 1.0,
  seed: 0,
}

type Check<C> = { [K in keyof C]?: (v: C[K], c: C) => string | undefined }

export const positive = (v: number) => (Number.isFinite(v) && v > 0 ? undefined : `must be a finite number > 0, got ${v}`)
export const nonNegative = (v: number) => (Number.isFinite(v) && v >= 0 ? undefined : `must be a finite number ≥ 0, got ${v}`)
export const positiveInt = (v: number) => (Number.isInteger(v) && v > 0 ? undefined : `must be an integer ≥ 1, got ${v}`)
export const nonNegativeInt = (v: number) => (Number.isInteger(v) && v >= 0 ? undefined : `must be an integer ≥ 0, got ${v}`)
export const oneOf =
  <T extends string>(...allowed: T[]) =>
  (v: T) =>
    allowed.includes(v) ? undefined : `must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}, got ${JSON.stringify(v)}`
export const isBoolean = (v: boolean) => (typeof v === "boolean" ? undefined : `must be true or false, got ${JSON.stringify(v)}`)

const trainingChecks: Check<TrainingArgs> = {
  learningRate: positive,
  batchSize: positiveInt,
  numEpochs: positiveInt,
  maxSteps: nonNegativeInt,
  maxGradNorm: nonNegative,
  seed: (v) => (Number.isInteger(v) ? undefined : `must be an integer, got ${v}`),
}

/**
 * Merge `given` over `defaults`, reject unknown fields, run every check. Throws PreferenceConfigError
 * naming the first bad field.
 */
export function makeConfig<C extends object>(name: string, defaults: C, checks: Check<C>, given: Partial<C> | undefined): C {
  if (given !== undefined && (typeof given !== "object" || given === null || Array.isArray(given)))
    throw new PreferenceConfigError(name, "(config)", `must be a plain object of fields, got ${JSON.stringify(given)}`)
  for (const key of Object.keys(given ?? {})) {
    if (!(key in defaults))
      throw new PreferenceConfigError(name, key, `unknown field; known fields are ${Object.keys(defaults).join(", ")}`)
  }
  const config = { ...defaults, ...(given ?? {}) } as C
  const all = { ...trainingChecks, ...checks } as Record<string, ((v: unknown, c: C) => string | undefined) | undefined>
  for (const [key, check] of Object.entries(all)) {
    if (!(key in config) || check === undefined) continue
    const value = (config as Record<string, unknown>)[key]
    if (typeof (defaults as Record<string, unknown>)[key] === "number" && typeof value !== "number")
      throw new PreferenceConfigError(name, key, `must be a number, got ${JSON.stringify(value)}`)
    const problem = check(value, config)
    if (problem !== undefined) throw new PreferenceConfigError(name, key, problem)
  }
  return config
}
