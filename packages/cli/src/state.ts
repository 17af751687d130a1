/**
 * State of clusters started by `moa up` (detached or not): `.moa/run/<cluster>.json` under
 * the working directory (or `$MOA_STATE_DIR`), so `moa down`, `moa status` and `moa call`
 * find the cluster and nothing is left behind.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"

export interface RunState {
  readonly cluster: string
  readonly file: string
  /** PID of the `moa up` supervisor. */
  readonly pid: number
  readonly natsUrl: string
  readonly embeddedNats?: { readonly pid: number | undefined; readonly storeDir: string | undefined }
  readonly agents: ReadonlyArray<{ readonly agent: string; readonly replica: number; readonly pid: number | undefined }>
  readonly startedAt: string
  readonly log?: string
  readonly status: "starting" | "running" | "stopping"
}

export const stateDir = (): string => process.env.MOA_STATE_DIR ?? join(process.cwd(), ".moa", "run")
export const statePath = (cluster: string): string => join(stateDir(), `${cluster}.json`)

export const writeState = (s: RunState): void => {
  mkdirSync(stateDir(), { recursive: true })
  const tmp = `${statePath(s.cluster)}.tmp-${process.pid}`
  writeFileSync(tmp, JSON.stringify(s, null, 2))
  renameSync(tmp, statePath(s.cluster))
}

export const readState = (cluster: string): RunState | undefined => {
  try {
    return JSON.parse(readFileSync(statePath(cluster), "utf8")) as RunState
  } catch {
    return undefined
  }
}

export const removeState = (cluster: string): void => rmSync(statePath(cluster), { force: true })

export const isAlive = (pid: number | undefined): boolean => {
  if (!pid) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Every recorded cluster (stale entries whose supervisor is gone are included; check `isAlive(pid)`). */
export const listStates = (): Array<RunState> => {
  const dir = stateDir()
  if (!existsSync(dir)) return []
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .map((f) => readState(f.slice(0, -5)))
    .filter((s): s is RunState => s !== undefined)
}
