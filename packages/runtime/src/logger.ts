/**
 * pino loggers: JSON lines by default (what `moa up` collects from agent processes), pretty
 * when stdout is a terminal. `MOA_LOG_FORMAT=json|pretty` and `MOA_LOG_LEVEL` override.
 */
import { pino, type Logger } from "pino"

export type { Logger } from "pino"

let root: Logger | undefined

export const rootLogger = (): Logger => {
  if (root) return root
  const level = process.env.MOA_LOG_LEVEL ?? "info"
  const format = process.env.MOA_LOG_FORMAT ?? (process.stdout.isTTY ? "pretty" : "json")
  root =
    format === "pretty"
      ? pino({ level, transport: { target: "pino-pretty", options: { colorize: true, translateTime: "HH:MM:ss.l", ignore: "pid,hostname" } } })
      : pino({ level, base: { pid: process.pid } })
  return root
}

/** One child logger per agent, carrying its cluster, name and replica. */
export const agentLogger = (cluster: string, agent: string, replica: number): Logger => rootLogger().child({ cluster, agent, replica })
