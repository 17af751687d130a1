/**
 * Subject layout: requests go to `moa.<cluster>.<agent>.<verb>`, events to
 * `moa.<cluster>.events.<kind>`. Names are restricted so they are safe both as NATS subject
 * tokens and as NATS service names.
 */

export const SUBJECT_PREFIX = "moa"

/** Letters, digits, `_` and `-`; starts with a letter or digit; at most 64 characters. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/

/** Agent names that would collide with subject tokens we use ourselves. */
export const RESERVED_AGENT_NAMES: ReadonlyArray<string> = ["events", "_INBOX", "*", ">"]

/** `undefined` when `name` is fine, else a sentence saying what is wrong. */
export const checkName = (name: unknown, what = "name"): string | undefined => {
  if (typeof name !== "string" || name.length === 0) return `${what} must be a non-empty string`
  if (!NAME_PATTERN.test(name)) {
    return `${what} ${JSON.stringify(name)} may only contain letters, digits, "_" and "-" (starting with a letter or digit, at most 64 characters)`
  }
  return undefined
}

const assertName = (name: string, what: string) => {
  const problem = checkName(name, what)
  if (problem) throw new Error(problem)
}

/** `moa.<cluster>.<agent>` — the service group of one agent. */
export const agentSubject = (cluster: string, agent: string): string => {
  assertName(cluster, "cluster name")
  assertName(agent, "agent name")
  return `${SUBJECT_PREFIX}.${cluster}.${agent}`
}

/** `moa.<cluster>.<agent>.<verb>` */
export const verbSubject = (cluster: string, agent: string, verb: string): string => {
  assertName(verb, "verb")
  return `${agentSubject(cluster, agent)}.${verb}`
}

/** `moa.<cluster>.events.<kind>` (`kind` may be `*` or `>` to subscribe). */
export const eventSubject = (cluster: string, kind: string): string => {
  assertName(cluster, "cluster name")
  if (kind !== "*" && kind !== ">") assertName(kind, "event kind")
  return `${SUBJECT_PREFIX}.${cluster}.events.${kind}`
}

/** Parse `moa.<cluster>.<agent>.<verb>`; undefined if the subject is not of that shape. */
export const parseVerbSubject = (subject: string): { cluster: string; agent: string; verb: string } | undefined => {
  const parts = subject.split(".")
  if (parts.length !== 4 || parts[0] !== SUBJECT_PREFIX || parts[2] === "events") return undefined
  return { cluster: parts[1], agent: parts[2], verb: parts[3] }
}
