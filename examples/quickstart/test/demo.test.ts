/** The README's first command: `npm run demo` starts the quickstart cluster, answers, and (no terminal) stops cleanly. */
import { spawn } from "node:child_process"
import { mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { alive } from "../../../packages/cli/test/helpers.ts"

const root = fileURLToPath(new URL("../../../", import.meta.url))

describe("quickstart demo", () => {
  it("starts the cluster on an embedded nats-server, shows it answering, and exits leaving nothing behind", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "moa-demo-"))
    try {
      const r = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
        const child = spawn(process.execPath, ["packages/cli/bin/moa.js", "up", "examples/quickstart/cluster.ts", "--demo"], {
          cwd: root,
          env: { ...process.env, MOA_STATE_DIR: stateDir, MOA_NATS_URL: "" },
          stdio: ["ignore", "pipe", "pipe"],
        })
        let out = ""
        child.stdout.on("data", (d) => (out += d))
        child.stderr.on("data", (d) => (out += d))
        const t = setTimeout(() => {
          child.kill("SIGKILL")
          reject(new Error(`demo did not finish:\n${out}`))
        }, 420_000)
        child.on("exit", (code) => {
          clearTimeout(t)
          resolve({ code, out })
        })
      })
      expect(r.code, r.out).toBe(0)
      expect(r.out).toContain("embedded nats-server")
      expect(r.out).toContain('"text":"2 + 3 * 4 = 14"')
      expect(r.out).toContain('"text":"HELLO FROM MOA"')
      expect(r.out).toContain("(stream) you said: streamed word by word")
      expect(r.out).toContain('{"sum":42}')
      expect(readdirSync(stateDir).filter((f) => f.endsWith(".json"))).toEqual([])
      const pids = [...r.out.matchAll(/"pid":(\d+)/g)].map((m) => Number(m[1]))
      for (const pid of pids) expect(alive(pid), `pid ${pid} still running`).toBe(false)
    } finally {
      rmSync(stateDir, { recursive: true, force: true })
    }
  }, 480_000)
})
