/**
 * The console's state and commands, independent of the terminal: ask a question (through the
 * router, or streamed straight from one expert), keep the history, store ratings and better
 * answers, list agents, start and watch preference rounds. `moa console` (commands/console.ts)
 * feeds it lines from a terminal or from a pipe.
 */
import type { NatsConnection } from "@nats-io/nats-core"
import { discoverPromise } from "@moa/bus"
import { makeClient, type AgentClient } from "@moa/runtime"
import { askRouter, type RouteResponse } from "@moa/router"
import { recordFeedback } from "./feedback.ts"

export const MODES = ["single", "moe", "moa", "self-moa"] as const
export type Mode = (typeof MODES)[number]

/** What one answer was: the JSON line of piped mode. */
export interface Answer {
  readonly question: string
  readonly answer: string
  readonly mode: Mode
  readonly trace: RouteResponse["trace"] | StreamTrace
}
/** The trace of a streamed single-expert answer (the router is not involved). */
export interface StreamTrace {
  readonly mode: "single"
  readonly streamed: true
  readonly expert: string
  readonly firstTokenMs: number
  readonly totalLatencyMs: number
  readonly tokens: number
}

export interface SessionOptions {
  readonly nc: NatsConnection
  readonly cluster: string
  readonly write: (s: string) => void
  readonly color?: boolean
  readonly timeoutMs?: number
  readonly mode?: Mode
}

const HELP = `commands:
  <question>                ask the cluster (e.g. add 37 45 · reverse kdjw · capital of France)
  /mode single|moe|moa|self-moa   how the router answers (now: %MODE%)
  /expert <name>|auto       single mode: stream from this expert (auto = the gate's pick)
  /agents                   agents of the cluster and their health ($SRV.INFO/STATS)
  /history                  questions asked in this session
  /rate good|bad [n]        rate the last answer (or answer n of /history); stored for the coordinator
  /better <answer>          give the right answer to the last question (a preference pair)
  /round [start|watch]      start a preference round / watch round events (needs a coordinator)
  /help                     this text
  /quit                     leave (Ctrl-D too)`

export class ConsoleSession {
  mode: Mode
  expert: string | undefined
  readonly history: Answer[] = []
  readonly client: AgentClient
  private readonly c: (code: string, s: string) => string

  constructor(readonly o: SessionOptions) {
    this.mode = o.mode ?? "moe"
    this.client = makeClient(o.nc, o.cluster)
    this.c = o.color ? (code, s) => `\x1b[${code}m${s}\x1b[0m` : (_c, s) => s
  }

  /** Ask through the router (any mode), no rendering: what piped mode prints. */
  async ask(question: string): Promise<Answer> {
    const q = question.trim()
    if (!q) throw new Error("empty question")
    const req = { prompt: q, mode: this.mode, ...(this.mode === "single" && this.expert ? { expert: this.expert } : {}), ...(this.mode === "moa" ? { layers: 1 } : {}) }
    const res = await askRouter(this.o.nc, this.o.cluster, req as Parameters<typeof askRouter>[2], { timeoutMs: this.o.timeoutMs ?? 60_000 })
    const a: Answer = { question: q, answer: res.answer, mode: this.mode, trace: res.trace }
    this.history.push(a)
    return a
  }

  /** Stream one expert's answer token by token (single mode with an expert chosen). */
  async stream(question: string, expert: string): Promise<Answer> {
    const q = question.trim()
    const t0 = performance.now()
    let first = -1
    let text = ""
    let tokens = 0
    this.o.write(`${this.c("1", expert)} › `)
    for await (const ch of this.client.stream(expert, "generate", { prompt: q, stream: true, temperature: 0, maxTokens: 32 }, { timeoutMs: this.o.timeoutMs ?? 60_000 })) {
      if (first < 0) first = performance.now() - t0
      text += ch.text
      tokens = ch.tokens ?? tokens
      this.o.write(ch.text)
    }
    this.o.write("\n")
    const trace: StreamTrace = { mode: "single", streamed: true, expert, firstTokenMs: Math.max(0, first), totalLatencyMs: performance.now() - t0, tokens }
    this.o.write(this.c("2", `  streamed from ${expert}: first token ${ms(trace.firstTokenMs)}, ${tokens} tokens in ${ms(trace.totalLatencyMs)}`) + "\n")
    const a: Answer = { question: q, answer: text.trim(), mode: "single", trace }
    this.history.push(a)
    return a
  }

  /** One line typed by the user. Returns false to quit. */
  async handle(line: string): Promise<boolean> {
    const s = line.trim()
    if (!s) return true
    try {
      if (!s.startsWith("/")) {
        if (this.mode === "single" && this.expert) await this.stream(s, this.expert)
        else {
          this.o.write(this.c("2", `  asking the router (${this.mode})…`) + "\n")
          this.o.write(this.render(await this.ask(s)))
        }
        return true
      }
      const [cmd, ...rest] = s.slice(1).split(/\s+/)
      const arg = rest.join(" ")
      switch (cmd) {
        case "quit":
        case "exit":
        case "q":
          return false
        case "help":
          this.o.write(HELP.replace("%MODE%", this.mode + (this.expert ? `, expert ${this.expert}` : "")) + "\n")
          return true
        case "mode":
          if (!(MODES as ReadonlyArray<string>).includes(arg)) throw new Error(`/mode takes one of ${MODES.join(", ")}, got "${arg}"`)
          this.mode = arg as Mode
          this.o.write(`mode ${this.mode}\n`)
          return true
        case "expert":
          if (!arg) throw new Error("/expert takes an expert name (see /agents) or auto")
          if (arg === "auto") this.expert = undefined
          else {
            const names = await this.agentNames()
            if (!names.includes(arg)) throw new Error(`no expert "${arg}" in cluster ${this.o.cluster}; experts: ${names.join(", ") || "(none answering)"}`)
            this.expert = arg
            this.mode = "single"
          }
          this.o.write(this.expert ? `mode single, streaming from ${this.expert}\n` : "expert: the gate's choice\n")
          return true
        case "agents":
          this.o.write(await this.agents())
          return true
        case "history":
          this.o.write(this.history.length ? this.history.map((h, i) => `${String(i + 1).padStart(3)}. [${h.mode}] ${h.question} → ${h.answer}`).join("\n") + "\n" : "(no questions yet)\n")
          return true
        case "rate": {
          const [v, n] = rest
          if (v !== "good" && v !== "bad") throw new Error(`/rate takes good or bad, got "${v ?? ""}"`)
          const a = this.pick(n)
          const seq = await recordFeedback(this.o.nc, this.o.cluster, {
            kind: "rating", question: a.question, answer: a.answer, rating: v === "good" ? 1 : 0, mode: a.mode,
            ...("expert" in a.trace ? { expert: a.trace.expert } : {}), at: new Date().toISOString(),
          })
          this.o.write(`rated "${a.question}" → "${a.answer}" ${v} (stored, feedback #${seq})\n`)
          return true
        }
        case "better": {
          if (!arg) throw new Error("/better takes the right answer, e.g. /better 82")
          const a = this.pick(undefined)
          const seq = await recordFeedback(this.o.nc, this.o.cluster, { kind: "better", question: a.question, chosen: arg, rejected: a.answer, mode: a.mode, at: new Date().toISOString() })
          this.o.write(`stored the pair "${a.question}": "${arg}" over "${a.answer}" (feedback #${seq})\n`)
          return true
        }
        case "round":
          await this.round(arg || "start")
          return true
        default:
          throw new Error(`unknown command /${cmd}; /help lists them`)
      }
    } catch (e) {
      this.o.write(this.c("31", `error: ${(e as Error).message}`) + "\n")
      return true
    }
  }

  private pick(n: string | undefined): Answer {
    if (this.history.length === 0) throw new Error("nothing to rate yet: ask a question first")
    if (n === undefined) return this.history[this.history.length - 1]!
    const i = Number(n)
    if (!(Number.isInteger(i) && i >= 1 && i <= this.history.length)) throw new Error(`answer number must be 1..${this.history.length} (see /history), got "${n}"`)
    return this.history[i - 1]!
  }

  private async services() {
    return (await discoverPromise(this.o.nc, { waitMs: 400 })).filter((s) => s.metadata.cluster === this.o.cluster)
  }

  private async agentNames(): Promise<string[]> {
    return [...new Set((await this.services()).filter((s) => s.metadata.role === "expert").map((s) => s.metadata.agent ?? s.name))].sort()
  }

  /** `/agents`: one row per agent with its instances and the stats of its endpoints. */
  async agents(): Promise<string> {
    const by = new Map<string, { role: string; pids: string[]; requests: number; errors: number; time: number }>()
    for (const s of await this.services()) {
      const name = s.metadata.agent ?? s.name
      const e = by.get(name) ?? { role: s.metadata.role ?? "?", pids: [], requests: 0, errors: 0, time: 0 }
      e.pids.push(s.metadata.pid ?? s.id.slice(-4))
      for (const ep of s.stats?.endpoints ?? []) {
        e.requests += ep.num_requests
        e.errors += ep.num_errors
        e.time += ep.processing_time
      }
      by.set(name, e)
    }
    if (by.size === 0) return `no agents of cluster ${this.o.cluster} answered $SRV.INFO\n`
    const rows = [...by.entries()].sort().map(([n, e]) => {
      const avg = e.requests ? e.time / e.requests / 1e6 : undefined
      const health = e.pids.length === 0 ? "down" : e.errors > 0 && e.errors >= e.requests / 2 ? "failing" : "ok"
      return `  ${n.padEnd(10)} ${e.role.padEnd(8)} ${health.padEnd(7)} instances ${e.pids.length}  requests ${e.requests}  errors ${e.errors}  avg ${avg === undefined ? "-" : ms(avg)}`
    })
    return rows.join("\n") + "\n"
  }

  /** `/round start|watch`: ask the cluster's coordinator for a round, then show its events. */
  private async round(what: string): Promise<void> {
    const coord = (await this.services()).find((s) => s.metadata.role === "coordinator")
    if (!coord) throw new Error(`cluster ${this.o.cluster} has no coordinator agent answering; rounds need one (see docs/preference.md)`)
    const name = coord.metadata.agent ?? coord.name
    if (what === "start") {
      const r = await this.client.call(name, "round", {}, { timeoutMs: 30_000 })
      this.o.write(`round started: ${JSON.stringify(r)}\n`)
    } else if (what !== "watch") throw new Error(`/round takes start or watch, got "${what}"`)
    const sub = this.o.nc.subscribe(`moa.${this.o.cluster}.rounds.>`)
    const stop = setTimeout(() => sub.unsubscribe(), 30_000)
    this.o.write("watching round events for 30 s…\n")
    for await (const m of sub) this.o.write(`  ${m.subject.split(".").slice(3).join(" ")}: ${new TextDecoder().decode(m.data).slice(0, 160)}\n`)
    clearTimeout(stop)
  }

  /** The answer with its trace: gate bars, candidates, the aggregator's pick and latencies. */
  render(a: Answer): string {
    const t = a.trace
    const out: string[] = [`${this.c("1;32", "answer")} ${this.c("1", a.answer || "(empty)")}`]
    if ("streamed" in t) return out.join("\n") + "\n"
    if (t.gate) {
      out.push(this.c("2", `gate ${t.gate.version} (${t.gate.rule}, confidence ${t.gate.confidence.toFixed(2)})`))
      const probs = Object.entries(t.gate.probs).sort((x, y) => y[1] - x[1])
      for (const [e, p] of probs) {
        const chosen = t.gate.chosen.includes(e)
        out.push(`  ${(chosen ? this.c("1", e) : e).padEnd(chosen && this.o.color ? 18 : 10)} ${bar(p)} ${(100 * p).toFixed(1).padStart(5)}%`)
      }
    }
    for (const l of t.layers) {
      out.push(this.c("2", `layer ${l.index}: ${ms(l.latencyMs)}`))
      for (const c of l.candidates) {
        const who = c.sample !== undefined ? `${c.expert}#${c.sample}` : c.expert
        out.push(c.ok ? `  ${who.padEnd(10)} ${JSON.stringify(c.text)}  ${ms(c.latencyMs)}${c.weight !== undefined ? `  weight ${c.weight.toFixed(2)}` : ""}` : `  ${who.padEnd(10)} ${this.c("31", `dropped (${c.dropped}${c.error ? `: ${c.error}` : ""})`)}`)
      }
    }
    const g = t.aggregator
    out.push(`${this.c("2", "aggregator")} ${g.kind}${g.expert ? ` (${g.expert})` : ""} → ${JSON.stringify(g.answer)}${g.tally ? `  tally ${JSON.stringify(g.tally)}` : ""}${g.fallback ? "  (fell back to a vote)" : ""}`)
    out.push(this.c("2", `total ${ms(t.totalLatencyMs)} (${t.mode})`))
    return out.join("\n") + "\n"
  }
}

const ms = (x: number) => (x < 10 ? `${x.toFixed(1)} ms` : `${Math.round(x)} ms`)
const bar = (p: number, w = 24) => {
  const n = Math.max(0, Math.min(w, Math.round(p * w)))
  return "█".repeat(n) + "·".repeat(w - n)
}
