/**
 * The README's first command, piped: `moa console --up examples/skills/cluster.ts` (what
 * `npm run demo` runs) starts the skills cluster on an embedded nats-server, answers one JSON line
 * per question for every skill, stops the cluster and exits 0, leaving no process behind.
 * The accuracy the committed artifacts reach is printed (it is what docs/demo.md reports) and
 * asserted (at most 2 of the 20 wrong); also every answer has a trace, the gate sends every
 * question to its skill's expert, and that expert is the one that answered.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { SKILLS, generate, allCapitals, check } from "@moa/skills"
import { alive } from "../../../packages/cli/test/helpers.ts"

const root = fileURLToPath(new URL("../../../", import.meta.url))
const PER_SKILL = 4

describe("skills demo, piped", () => {
  it("answers questions of every skill as JSON lines with traces, then exits 0 and stops the cluster", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "moa-skills-demo-"))
    const questions = SKILLS.flatMap((s) =>
      (s === "capital" ? allCapitals().filter((_, i) => i % 61 === 0) : generate(s, { n: PER_SKILL, seed: 7, split: "test", unique: true })).slice(0, PER_SKILL).map((e) => ({ ...e, skill: s })),
    )
    try {
      const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
        const child = spawn(process.execPath, ["packages/cli/bin/moa.js", "console", "--up", "examples/skills/cluster.ts"], {
          cwd: root,
          env: { ...process.env, MOA_STATE_DIR: stateDir, MOA_NATS_URL: "" },
          stdio: ["pipe", "pipe", "pipe"],
        })
        let out = ""
        let err = ""
        child.stdout.on("data", (d) => (out += d))
        child.stderr.on("data", (d) => (err += d))
        child.stdin.end(questions.map((q) => q.question).join("\n") + "\n")
        const t = setTimeout(() => {
          child.kill("SIGKILL")
          reject(new Error(`console did not finish:\n${out}\n${err}`))
        }, 540_000)
        child.on("exit", (code) => {
          clearTimeout(t)
          resolve({ code, out, err })
        })
      })
      expect(r.code, r.err).toBe(0)
      const lines = r.out.trim().split("\n").map((l) => JSON.parse(l))
      expect(lines).toHaveLength(questions.length)
      const right: Record<string, number> = {}
      let routed = 0
      lines.forEach((l, i) => {
        const q = questions[i]!
        expect(l.question).toBe(q.question)
        expect(l.error, JSON.stringify(l)).toBeUndefined()
        expect(typeof l.answer).toBe("string")
        expect(l.mode).toBe("moe")
        expect(l.trace.gate.chosen, q.question).toHaveLength(1)
        expect(l.trace.layers[0].candidates[0].expert).toBe(l.trace.gate.chosen[0])
        expect(l.trace.aggregator.answer).toBe(l.answer)
        if (l.trace.gate.chosen[0] === q.skill) routed++
        right[q.skill] = (right[q.skill] ?? 0) + (check(l.answer, q.answer) ? 1 : 0)
      })
      // the gate's own held-out routing is 100% (train.ts); in the cluster the router also weighs
      // each expert's health from $SRV.STATS polls, which a loaded machine can miss for a moment
      console.log(`demo routing: ${routed}/${questions.length} questions to their skill's expert`)
      expect(routed / questions.length, lines.map((l) => `${l.question} → ${l.trace.gate.chosen} (${l.trace.gate.rule}, adjusted ${JSON.stringify(l.trace.gate.adjusted)})`).join("\n")).toBeGreaterThanOrEqual(0.9)
      console.log(`demo accuracy (moe, ${PER_SKILL} held-out questions per skill): ${SKILLS.map((s) => `${s} ${right[s] ?? 0}/${PER_SKILL}`).join(", ")}`)
      // the committed experts are 96.5–100% right on their skills (docs/demo.md): at most 2 of these
      // questions may miss (≥ 3 misses is under a 1% chance with those experts, and certain with
      // the earlier artifacts, which got 13 of 20)
      const total = SKILLS.reduce((n, s) => n + (right[s] ?? 0), 0)
      expect(total, lines.map((l) => `${l.question} → ${l.answer}`).join("\n")).toBeGreaterThanOrEqual(questions.length - 2)
      // the cluster stopped: no state file, no agent or nats-server left
      expect(readdirSync(stateDir).filter((f) => f.endsWith(".json"))).toEqual([])
      for (const pid of [...r.err.matchAll(/\bpid[": ]+(\d+)/g)].map((m) => Number(m[1]))) expect(alive(pid), `pid ${pid} still running`).toBe(false)
    } finally {
      rmSync(stateDir, { recursive: true, force: true })
    }
  }, 600_000)
})
