/**
 * RPC benchmark: round-trip latency (p50/p99, one request at a time) and throughput (64 in
 * flight) of a no-op agent through the whole runtime, against a bare NATS request/reply with
 * the same ~200-byte msgpack payload, in the same run. Each side is measured in alternating
 * rounds (other work on the machine drifts); the best round of each is reported.
 *
 *   npm run bench                 # defaults
 *   npm run bench -- --seconds 5 --rounds 3 --inflight 64 --json
 */
import { spawn, type ChildProcess } from "node:child_process"
import { createRequire } from "node:module"
import { cpus, loadavg } from "node:os"
import { performance } from "node:perf_hooks"
import { fileURLToPath, pathToFileURL } from "node:url"
import { connect } from "@nats-io/transport-node"
import { encodeSync, GenerateRequest } from "@moa/protocol"
import { spawnNatsServer } from "@moa/bus"
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

interface Result {
  readonly p50us: number
  readonly p99us: number
  readonly rps: number
  readonly loadedP50us: number
  readonly loadedP99us: number
}

const measure = async (call: () => Promise<unknown>): Promise<Result> => {
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
  const t0 = performance.now()
  await Promise.all(Array.from({ length: INFLIGHT }, worker))
  const secs = (performance.now() - t0) / 1000
  return { p50us: pct(lat, 0.5), p99us: pct(lat, 0.99), rps: done / secs, loadedP50us: pct(loaded, 0.5), loadedP99us: pct(loaded, 0.99) }
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
  // The same client options for both sides (no per-request async stack traces, as the bus sets).
  const nc = await connect({ servers: nats.url, noAsyncTraces: true })
  const client = makeClient(nc, "bench")
  const bareCall = () => nc.request("bench.bare", payload, { timeout: 10_000 })
  const moaCall = () => client.call("noop", "generate", request, { timeoutMs: 10_000 })
  const reply = encodeSync(GenerateRequest, request).length

  const bareRuns: Array<Result> = []
  const moaRuns: Array<Result> = []
  for (let r = 0; r < ROUNDS; r++) {
    bareRuns.push(await measure(bareCall))
    moaRuns.push(await measure(moaCall))
    if (!JSON_OUT) process.stderr.write(`round ${r + 1}/${ROUNDS} done\n`)
  }
  const best = (rs: Array<Result>): Result => ({
    p50us: Math.min(...rs.map((r) => r.p50us)),
    p99us: Math.min(...rs.map((r) => r.p99us)),
    rps: Math.max(...rs.map((r) => r.rps)),
    loadedP50us: Math.min(...rs.map((r) => r.loadedP50us)),
    loadedP99us: Math.min(...rs.map((r) => r.loadedP99us)),
  })
  const b = best(bareRuns)
  const m = best(moaRuns)
  const ratios = { p50: m.p50us / b.p50us, p99: m.p99us / b.p99us, throughput: m.rps / b.rps }
  // Paired rounds (bare then moa, back to back) drift together with the machine's load: their median ratio is the steadier figure.
  const median = (xs: Array<number>) => [...xs].sort((a, c) => a - c)[Math.floor(xs.length / 2)]
  const paired = {
    p50: median(bareRuns.map((r, i) => moaRuns[i].p50us / r.p50us)),
    p99: median(bareRuns.map((r, i) => moaRuns[i].p99us / r.p99us)),
    throughput: median(bareRuns.map((r, i) => moaRuns[i].rps / r.rps)),
  }
  const out = {
    payloadBytes: payload.length,
    replyBytes: reply,
    inFlight: INFLIGHT,
    seconds: SECONDS,
    rounds: ROUNDS,
    machine: { cpus: cpus().length, loadavg: loadavg().map((x) => Math.round(x * 10) / 10) },
    bare: b,
    moa: m,
    ratios,
    pairedMedianRatios: paired,
    targets: { latency: "moa p50/p99 <= 1.2 x bare", throughput: "moa >= 0.8 x bare" },
    pass: ratios.p50 <= 1.2 && ratios.p99 <= 1.2 && ratios.throughput >= 0.8,
  }
  if (JSON_OUT) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
  else {
    const f = (us: number) => `${Math.round(us)} µs`
    const row = (name: string, r: Result) =>
      `${name.padEnd(12)} p50 ${f(r.p50us).padStart(8)}  p99 ${f(r.p99us).padStart(8)}  | ${INFLIGHT} in flight: ${Math.round(r.rps).toString().padStart(6)} req/s  p50 ${f(r.loadedP50us).padStart(8)}  p99 ${f(r.loadedP99us).padStart(9)}`
    process.stdout.write(
      [
        `RPC round trip, ${payload.length}-byte msgpack request, best of ${ROUNDS} alternating rounds (${SEQ} sequential + ${SECONDS}s at ${INFLIGHT} in flight each); ${cpus().length} cpus, load ${loadavg()[0].toFixed(1)}`,
        row("bare NATS", b),
        row("moa runtime", m),
        `median of paired rounds moa/bare: p50 ${paired.p50.toFixed(2)}x, p99 ${paired.p99.toFixed(2)}x, throughput ${paired.throughput.toFixed(2)}x`,
        `ratio moa/bare (best rounds): p50 ${ratios.p50.toFixed(2)}x, p99 ${ratios.p99.toFixed(2)}x, throughput ${ratios.throughput.toFixed(2)}x  (targets: latency <= 1.20x, throughput >= 0.80x) → ${out.pass ? "PASS" : "MISS"}`,
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
