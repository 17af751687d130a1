/** Pretty printing of agent log lines (pino JSON) for a terminal. */
const levels: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO ", 40: "WARN ", 50: "ERROR", 60: "FATAL" }
const colors: Record<number, string> = { 10: "90", 20: "90", 30: "32", 40: "33", 50: "31", 60: "31" }
const skip = new Set(["level", "time", "pid", "hostname", "msg", "cluster", "agent", "replica"])

export const formatAgentLine = (who: string, line: string): string | undefined => {
  if (!line.startsWith("{")) return `\x1b[36m${who}\x1b[0m ${line}`
  try {
    const o = JSON.parse(line) as Record<string, unknown>
    const lvl = Number(o.level ?? 30)
    const t = new Date(Number(o.time ?? Date.now())).toISOString().slice(11, 23)
    const extra = Object.entries(o)
      .filter(([k]) => !skip.has(k))
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(" ")
    return `\x1b[90m${t}\x1b[0m \x1b[${colors[lvl] ?? "0"}m${levels[lvl] ?? lvl}\x1b[0m \x1b[36m${who}\x1b[0m ${o.msg ?? ""}${extra ? ` \x1b[90m${extra}\x1b[0m` : ""}`
  } catch {
    return `${who} ${line}`
  }
}
