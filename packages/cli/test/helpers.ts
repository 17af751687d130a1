import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url))
export const moaBin = fileURLToPath(new URL("../bin/moa.js", import.meta.url))
export const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))

export interface RunResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Run `moa <args>` to completion. */
export const runMoa = (args: ReadonlyArray<string>, env: Record<string, string> = {}, timeoutMs = 240_000): Promise<RunResult> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [moaBin, ...args], { cwd: repoRoot, env: { ...process.env, MOA_LOG_FORMAT: "json", ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    const t = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`moa ${args.join(" ")} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`))
    }, timeoutMs)
    child.on("exit", (code) => {
      clearTimeout(t)
      resolve({ code, stdout, stderr })
    })
  })

export const alive = (pid: number | undefined) => {
  if (!pid) return false
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export const waitFor = async <A>(what: string, f: () => A | undefined | false | Promise<A | undefined | false>, timeoutMs = 60_000, everyMs = 100): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await f()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(everyMs)
  }
}
