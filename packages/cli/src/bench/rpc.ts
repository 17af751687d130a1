/**
 * RPC benchmark: round-trip latency (p50/p99, one request at a time) and throughput (64 in
 * flight) of a no-op agent through the whole runtime, against a bare NATS request/reply with
 * the same ~200-byte msgpack payload, in the same run. A third side sends the bare bytes through
 * the reply mux moa's client uses (`requestRaw`), so the runtime's own cost (codec, validation,
 * serving, stats) shows apart from the transport. Sides are measured in alternating rounds
 * (other work on the machine drifts); the best round of each and the median of the per-round
 * ratios are reported, with the CPU time per request of the client, the server and nats-server.
 *
 *   npm run bench                 # defaults
 *   npm run bench -- --seconds 5 --rounds 3 --inflight 64 --json
 *   npm run bench -- --prof --only moa --rounds 1   # CPU profiles of the agent in /tmp/moa-prof
 */
import { spawn, type ChildProcess } from "node:child_process"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { cpus, loadavg } from "node:os"
import { performance } from "node:perf_hooks"
import { fileURLToPath, pathToFileURL } from "node:url"
import { connect } from "@nats-io/transport-node"
import { encodeSync, GenerateRequest, GenerateResponse } from "@moa/protocol"
import { requestRaw, spawnNatsServer } from "@moa/bus"
import { makeClient } from "@moa/runtime"

const require = createRequire(import.meta.url)
const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : dflt
}
const SECONDS = arg("seconds", 4)
const ROUNDS = arg("rounds", 3)
const INFLIGHT = arg("inflight", 64)
const SEQ = arg("sequential", 2000)
const JSON_OUT = process.argv.includes("--json")
// `--only bare|mux|moa`: measure only that side in every slot (to profile one path with --prof / node --cpu-prof).
const ONLY = (() => {
  const i = process.argv.indexOf("--only")
  return i >= 0 ? process.argv[i + 1] : undefined
})()

const request = {
  prompt: "Summarise the following paragraph about mixture-of-experts routing in one sentence, please. It should be short and precise, no lists.",
  maxTokens: 32,
  temperature: 0.7,
  topK: 40,
  topP: 0.9,
  stop: ["\n\n"],
  seed: 42,
}
const payload = encodeSync(GenerateRequest, request)

const pct = (xs: Array<number>, p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}

/** CPU time (user + system) of a process in µs, from /proc (Linux); undefined elsewhere. */
const cpuOf = (pid: number | undefined): number | undefined => {
  if (pid === undefined) return undefined
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
    return ((Number(f[11]) + Number(f[12])) * 1e6) / 100 // utime + stime, in clock ticks of 10 ms
  } catch {
    return undefined
  }
}

/** CPU µs per request under load: this client, the serving process, nats-server. */
interface CpuPerRequest {
  readonly client: number
  readonly server: number
  readonly nats: number
}

interface Result {
  readonly cpu?: CpuPerRequest
  readonly p50us: number
  readonly p99us: number
  readonly rps: number
  readonly loadedP50us: number
  readonly loadedP99us: number
}

const measure = async (call: () => Promise<unknown>, serverPid: number | undefined, natsPid: number | undefined): Promise<Result> => {
  for (let i = 0; i < 500; i++) await call()
  const lat: Array<number> = []
  for (let i = 0; i < SEQ; i++) {
    const t0 = performance.now()
    await call()
    lat.push((performance.now() - t0) * 1000)
  }
  const loaded: Array<number> = []
  let done = 0
  const end = performance.now() + SECONDS * 1000
  const worker = async () => {
    while (performance.now() < end) {
      const t0 = performance.now()
      await call()
      loaded.push((performance.now() - t0) * 1000)
      done++
    }
  }
  const c0 = process.cpuUsage()
  const s0 = cpuOf(serverPid)
  const n0 = cpuOf(natsPid)
  const t0 = performance.now()
  await Promise.all(Array.from({ length: INFLIGHT }, worker))
  const secs = (performance.now() - t0) / 1000
  const c1 = process.cpuUsage(c0)
  const s1 = cpuOf(serverPid)
  const n1 = cpuOf(natsPid)
  const cpu =
    s0 !== undefined && s1 !== undefined && n0 !== undefined && n1 !== undefined
      ? { client: (c1.user + c1.system) / done, server: (s1 - s0) / done, nats: (n1 - n0) / done }
      : undefined
  return { p50us: pct(lat, 0.5), p99us: pct(lat, 0.99), rps: done / secs, loadedP50us: pct(loaded, 0.5), loadedP99us: pct(loaded, 0.99), cpu }
}

const startChild = (args: Array<string>): Promise<ChildProcess> =>
  new Promise((resolve, reject) => {
    const prof = process.argv.includes("--prof") ? ["--cpu-prof", "--cpu-prof-dir", "/tmp/moa-prof"] : []
    const c = spawn(process.execPath, [...prof, "--import", pathToFileURL(require.resolve("tsx")).href, ...args], {
      stdio: ["ignore", "ignore", "inherit", "ipc"],
      env: { ...process.env, MOA_LOG_LEVEL: "warn", MOA_LOG_FORMAT: "json" },
    })
    c.once("message", () => resolve(c))
    c.once("exit", (code) => reject(new Error(`${args[0]} exited with ${code}`)))
  })

const main = async () => {
  const nats = await spawnNatsServer({ jetstream: false })
  const bare = await startChild([fileURLToPath(new URL("./bare-responder.ts", import.meta.url)), nats.url])
  const agent = await startChild([
    require.resolve("@moa/runtime/agent-main"),
    "--cluster",
    fileURLToPath(new URL("./noop-cluster.ts", import.meta.url)),
    "--agent",
    "noop",
    "--nats",
    nats.url,
  ])
  // The same client options for every side (no per-request async stack traces, as the bus sets).
  const nc = await connect({ servers: nats.url, noAsyncTraces: true })
  const client = makeClient(nc, "bench")
  const sides = {
    // what a plain nats.js program does: nc.request (its own reply mux, a timer and an Error per request)
    bare: { call: () => nc.request("bench.bare", payload, { timeout: 10_000 }), pid: bare.pid },
    // the same bytes through the reply mux moa's client uses (one inbox subscription, one deadline timer), no codec:
    // moa minus this is what the runtime itself costs (envelope, msgpack, schema checks, serving, stats)
    mux: { call: () => requestRaw(nc, "bench.bare", payload, { timeoutMs: 10_000 }), pid: bare.pid },
    moa: { call: () => client.call("noop", "generate", request, { timeoutMs: 10_000 }), pid: agent.pid },
  }
  const reply = encodeSync(GenerateResponse, { text: request.prompt, tokens: 1, finishReason: "stop" }).length

  const runs: Record<keyof typeof sides, Array<Result>> = { bare: [], mux: [], moa: [] }
  for (let r = 0; r < ROUNDS; r++) {
    for (const k of ["bare", "mux", "moa"] as const) {
      const side = sides[ONLY && ONLY in sides ? (ONLY as keyof typeof sides) : k]
      runs[k].push(await measure(side.call, side.pid, nats.pid()))
    }
    if (!JSON_OUT) process.stderr.write(`round ${r + 1}/${ROUNDS} done\n`)
  }
  const median = (xs: Array<number>) => [...xs].sort((a, c) => a - c)[Math.floor(xs.length / 2)]
  const best = (rs: Array<Result>): Result => ({
    p50us: Math.min(...rs.map((r) => r.p50us)),
    p99us: Math.min(...rs.map((r) => r.p99us)),
    rps: Math.max(...rs.map((r) => r.rps)),
    loadedP50us: Math.min(...rs.map((r) => r.loadedP50us)),
    loadedP99us: Math.min(...rs.map((r) => r.loadedP99us)),
    cpu: rs.every((r) => r.cpu)
      ? {
          client: median(rs.map((r) => r.cpu!.client)),
          server: median(rs.map((r) => r.cpu!.server)),
          nats: median(rs.map((r) => r.cpu!.nats)),
        }
      : undefined,
  })
  const b = best(runs.bare)
  const x = best(runs.mux)
  const m = best(runs.moa)
  const ratios = { p50: m.p50us / b.p50us, p99: m.p99us / b.p99us, throughput: m.rps / b.rps }
  // Rounds run back to back (bare, mux, moa) and drift together with the machine's load: the median of the per-round ratios is the steadier figure.
  const pairedWith = (base: Array<Result>) => ({
    p50: median(base.map((r, i) => runs.moa[i].p50us / r.p50us)),
    p99: median(base.map((r, i) => runs.moa[i].p99us / r.p99us)),
    throughput: median(base.map((r, i) => runs.moa[i].rps / r.rps)),
  })
  const paired = pairedWith(runs.bare)
  const pairedMux = pairedWith(runs.mux)
  const out = {
    payloadBytes: payload.length,
    replyBytes: reply,
    inFlight: INFLIGHT,
    seconds: SECONDS,
    rounds: ROUNDS,
    machine: { cpus: cpus().length, loadavg: loadavg().map((v) => Math.round(v * 10) / 10) },
    bare: b,
    bareMux: x,
    moa: m,
    ratios,
    pairedMedianRatios: paired,
    pairedMedianRatiosVsMux: pairedMux,
    targets: { latency: "moa p50/p99 <= 1.2 x bare", throughput: "moa >= 0.8 x bare" },
    pass: ratios.p50 <= 1.2 && ratios.p99 <= 1.2 && ratios.throughput >= 0.8,
  }
  if (JSON_OUT) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
  else {
    const f = (us: number) => `${Math.round(us)} µs`
    const row = (name: string, r: Result) =>
      `${name.padEnd(16)} p50 ${f(r.p50us).padStart(8)}  p99 ${f(r.p99us).padStart(8)}  | ${INFLIGHT} in flight: ${Math.round(r.rps).toString().padStart(6)} req/s  p50 ${f(r.loadedP50us).padStart(8)}  p99 ${f(r.loadedP99us).padStart(9)}` +
      (r.cpu ? `  | CPU/req: client ${r.cpu.client.toFixed(1)}, server ${r.cpu.server.toFixed(1)}, nats-server ${r.cpu.nats.toFixed(1)} µs` : "")
    const ratioLine = (name: string, q: { p50: number; p99: number; throughput: number }) =>
      `${name}: p50 ${q.p50.toFixed(2)}x, p99 ${q.p99.toFixed(2)}x, throughput ${q.throughput.toFixed(2)}x`
    process.stdout.write(
      [
        `RPC round trip, ${payload.length}-byte msgpack request, best of ${ROUNDS} alternating rounds (${SEQ} sequential + ${SECONDS}s at ${INFLIGHT} in flight each); ${cpus().length} cpus, load ${loadavg()[0].toFixed(1)}` +
          (ONLY ? ` — ONLY ${ONLY} measured (profiling run, ratios meaningless)` : ""),
        row("bare NATS", b),
        row("bare NATS, mux", x),
        row("moa runtime", m),
        ratioLine("median of paired rounds moa/bare", paired),
        ratioLine("median of paired rounds moa/bare-mux (the runtime's own cost)", pairedMux),
        `${ratioLine("ratio moa/bare (best rounds)", ratios)}  (targets: latency <= 1.20x, throughput >= 0.80x) → ${out.pass ? "PASS" : "MISS"}`,
        "",
      ].join("\n"),
    )
  }
  await nc.close()
  bare.kill("SIGTERM")
  agent.kill("SIGTERM")
  await Promise.all([bare, agent].map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once("exit", r)))))
  await nats.stop()
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e?.stack ?? e}\n`)
  process.exit(1)
})
