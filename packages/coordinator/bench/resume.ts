/**
 * For docs/coordinator.md: a coordinator process killed (SIGKILL) while its expert trains, then
 * started again with the same run id. Prints every step line of both processes, then the run's
 * recorded events and the checks: each step once, the pairs recorded = the pairs trained, the
 * expert trained the job once, the job queue empty.
 *
 *   npx tsx packages/coordinator/bench/resume.ts [--algo dpo]
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { connect } from "@nats-io/transport-node"
import { startNatsServer } from "@moa/bus/testing"
import { makeClient } from "@moa/runtime"
import { Store, eventKey } from "../src/index.ts"
import { root, startExpert, weakModel } from "../test/helpers.ts"

const algo = process.argv.includes("--algo") ? process.argv[process.argv.indexOf("--algo") + 1]! : "dpo"
const work = fs.mkdtempSync(path.join(os.tmpdir(), "moa-coord-resume-bench-"))
const nats = await startNatsServer({ jetstream: true })
const expert = await startExpert({ model: await weakModel(), name: "sort", cluster: "demo", nats: nats.url, artifacts: path.join(work, "sort") })
const nc = await connect({ servers: nats.url })
const client = makeClient(nc, "demo")
const info = () => client.call<{ training: { running?: string; jobsDone: number }; adapters: { adapters: { name: string; versions: string[] }[] } }>("sort", "model-info", {})

const coordinator = (label: string, killWhenTraining: boolean) =>
  new Promise<void>((resolve) => {
    const p = spawn(process.execPath, ["--import", "tsx", path.join(root, "agents/coordinator/src/main.ts"), "--nats", nats.url, "--cluster", "demo", "--run", "r1", "--algo", algo, "--rounds", "1",
      "--experts", "sort=sort", "--prompts", "12", "--k", "4", "--held-out", "60", "--hyper", JSON.stringify({ maxSteps: 30, batchSize: 2, learningRate: 1e-3 })], { cwd: root, stdio: ["ignore", "pipe", "inherit"] })
    let buf = ""
    p.stdout!.on("data", (d) => {
      buf += d
      let i: number
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        try {
          const e = JSON.parse(line)
          if (!e.step) continue
          console.log(`${label}: ${e.step}${e.data?.version ? ` ${e.data.version}` : ""}${e.data?.examples !== undefined ? ` (${e.data.examples} examples)` : ""}`)
          if (killWhenTraining && e.step === "job-queued")
            void (async () => {
              for (;;) {
                const i = await info().catch(() => undefined)
                if (i?.training.running) break
                await new Promise((r) => setTimeout(r, 100))
              }
              console.log(`${label}: the expert is training ${(await info()).training.running} — SIGKILL the coordinator`)
              p.kill("SIGKILL")
            })()
        } catch {
          // not an event line
        }
      }
    })
    p.once("exit", (code, signal) => {
      console.log(`${label}: exited ${signal ?? code}`)
      resolve()
    })
  })

try {
  await coordinator("first ", true)
  await coordinator("second", false)
  const store = await Store.open(nc, "demo")
  const events = await store.events("r1")
  console.log(`\nrecorded: ${events.map((e) => e.step).join(" → ")}`)
  const samples = events.find((e) => e.step === "samples")!.data as { examples: number; data: unknown[] }
  const trained = events.find((e) => e.step === "trained")!.data as { examples: number; version: string }
  const i = await info()
  console.log(`each step once: ${new Set(events.map(eventKey)).size === events.length}`)
  console.log(`pairs recorded ${samples.data.length}, pairs trained ${trained.examples}`)
  console.log(`expert: jobs done ${i.training.jobsDone}, versions ${JSON.stringify(i.adapters.adapters.find((a) => a.name === "sort")?.versions)}`)
  console.log(`job queue: ${(await store.jsm.streams.info(store.jobsStream)).state.messages} messages`)
} finally {
  await nc.close()
  await expert.stop()
  await nats.stop()
  fs.rmSync(work, { recursive: true, force: true })
}
