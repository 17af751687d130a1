/**
 * Checking and loading cluster files. Every problem is reported at once, each naming the
 * agent, the field and what to do, so `moa up` can refuse before it starts anything.
 */
import { existsSync } from "node:fs"
import { resolve } from "node:path"
import { pathToFileURL } from "node:url"
import { BuiltinVerbs, checkName, RESERVED_AGENT_NAMES } from "@moa/protocol"
import { defaultRestartPolicy, type AgentDefinition, type ClusterDefinition } from "./define.ts"
import { isRole, RoleNames } from "./roles.ts"

export class ClusterFileError extends Error {
  override readonly name = "ClusterFileError"
  constructor(
    readonly file: string,
    readonly problems: ReadonlyArray<string>,
  ) {
    super(`invalid cluster file ${file}:\n${problems.map((p) => `  - ${p}`).join("\n")}`)
  }
}

const isPosInt = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n >= 1

/** All problems of a cluster definition (empty = valid). */
export const clusterProblems = (def: unknown): Array<string> => {
  const problems: Array<string> = []
  if (!def || typeof def !== "object") return ["the file must export a cluster: `export default defineCluster({ name, agents })`"]
  const c = def as Partial<ClusterDefinition>
  const nameProblem = checkName(c.name, "cluster name")
  if (nameProblem) problems.push(nameProblem)
  if (!Array.isArray(c.agents)) return [...problems, "`agents` must be an array of defineAgent({...})"]
  if (c.agents.length === 0) problems.push("the cluster has no agents: add at least one defineAgent({...}) to `agents`")
  const seen = new Set<string>()
  c.agents.forEach((a: Partial<AgentDefinition> | undefined, i) => {
    const where = `agents[${i}]${a && typeof a.name === "string" ? ` (${JSON.stringify(a.name)})` : ""}`
    if (!a || typeof a !== "object") {
      problems.push(`${where} is not an agent: use defineAgent({ name, role, handlers })`)
      return
    }
    const np = checkName(a.name, "agent name")
    if (np) problems.push(`${where}: ${np}`)
    else if (RESERVED_AGENT_NAMES.includes(a.name!)) problems.push(`${where}: agent name "${a.name}" is reserved; pick another`)
    if (typeof a.name === "string") {
      if (seen.has(a.name)) problems.push(`${where}: duplicate agent name "${a.name}": agent names must be unique in a cluster`)
      seen.add(a.name)
    }
    if (!isRole(a.role)) problems.push(`${where}: unknown role ${JSON.stringify(a.role)}; use one of ${RoleNames.join(", ")}`)
    if (a.replicas !== undefined && !isPosInt(a.replicas))
      problems.push(`${where}: replicas must be an integer >= 1 (got ${JSON.stringify(a.replicas)})`)
    if (a.concurrency !== undefined && !isPosInt(a.concurrency))
      problems.push(`${where}: concurrency must be an integer >= 1 (got ${JSON.stringify(a.concurrency)})`)
    if (a.maxPayload !== undefined && !isPosInt(a.maxPayload))
      problems.push(`${where}: maxPayload must be a positive number of bytes (got ${JSON.stringify(a.maxPayload)})`)
    if (a.maxQueue !== undefined && !(Number.isInteger(a.maxQueue) && a.maxQueue >= 0))
      problems.push(`${where}: maxQueue must be an integer >= 0 (got ${JSON.stringify(a.maxQueue)})`)
    if (a.setup !== undefined && typeof a.setup !== "function") problems.push(`${where}: setup must be a function`)
    const hs = a.handlers
    if (!hs || typeof hs !== "object" || Object.keys(hs).length === 0) {
      problems.push(`${where}: missing handlers: give at least one, e.g. handlers: { generate: (req) => ({ text, tokens, finishReason: "stop" }) }`)
    } else {
      for (const [verbName, h] of Object.entries(hs)) {
        const vp = checkName(verbName, "verb")
        if (vp) problems.push(`${where}: ${vp}`)
        if ((BuiltinVerbs as ReadonlyArray<string>).includes(verbName))
          problems.push(`${where}: verb "${verbName}" is built in (the runtime answers it); rename your handler`)
        const ok =
          typeof h === "function" ||
          (h && typeof h === "object" && (h as { _tag?: string })._tag === "VerbHandler" && typeof (h as { handle?: unknown }).handle === "function")
        if (!ok) problems.push(`${where}: missing handler for verb "${verbName}": expected a function or verb({ request, response }, fn), got ${h === undefined ? "undefined" : typeof h}`)
      }
    }
  })
  return problems
}

/** Fill defaults for objects that were not made by defineAgent/defineCluster (plain objects). */
const normalise = (def: ClusterDefinition): ClusterDefinition => ({
  ...def,
  _tag: "ClusterDefinition",
  restart: { ...defaultRestartPolicy, ...(def.restart ?? {}) },
  agents: def.agents.map((a) => ({
    ...a,
    _tag: "AgentDefinition",
    replicas: a.replicas ?? 1,
    concurrency: a.concurrency ?? 32,
    maxQueue: a.maxQueue ?? (a.concurrency ?? 32) * 8,
    maxPayload: a.maxPayload ?? 1024 * 1024,
    version: a.version ?? "0.1.0",
    description: a.description ?? "",
    metadata: a.metadata ?? {},
    env: a.env ?? {},
    config: a.config ?? {},
  })),
})

/** Validate (throwing ClusterFileError naming `file`) and fill defaults. */
export const validateCluster = (def: unknown, file = "<inline>"): ClusterDefinition => {
  const problems = clusterProblems(def)
  if (problems.length > 0) throw new ClusterFileError(file, problems)
  return normalise(def as ClusterDefinition)
}

/**
 * Import a cluster file (TypeScript works when tsx is registered, as in `moa` and agent
 * processes) and validate it. Accepts `export default defineCluster(...)` or `export const cluster`.
 */
export const loadClusterFile = async (file: string): Promise<ClusterDefinition> => {
  const abs = resolve(file)
  if (!existsSync(abs)) throw new ClusterFileError(file, [`file not found (${abs}); pass the path of a cluster file, e.g. examples/quickstart/cluster.ts`])
  let mod: Record<string, unknown>
  try {
    mod = (await import(pathToFileURL(abs).href)) as Record<string, unknown>
  } catch (e) {
    throw new ClusterFileError(file, [`cannot import it: ${(e as Error)?.stack ?? e}`])
  }
  const def = (mod.default as { default?: unknown } | undefined)?.default ?? mod.default ?? mod.cluster
  if (def === undefined) throw new ClusterFileError(file, ["it exports no cluster: add `export default defineCluster({ name, agents })`"])
  return validateCluster(def, file)
}
