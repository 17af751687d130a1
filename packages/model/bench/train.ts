// `npm run bench:model`: training and generation speed of our backends side by side with
// PyTorch (Debian's python3-torch on OpenBLAS-openmp, 1 and 2 threads) in the same run, MFU
// against numpy's 2-thread matmul peak, and numerical parity with PyTorch.
//   npm run bench:model [-- --steps 10] [-- --quick]   (quick: 0.81M only, fewer steps)
// Writes packages/model/bench/results/bench-model.json and docs/bench-model.md.
// Each measurement runs in its own process (bench/worker.ts, torch_gpt.py), one after another.
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { CONFIGS } from "./common.js"

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, "../../..")
const args = process.argv.slice(2)
const quick = args.includes("--quick")
const stepsArg = args.indexOf("--steps")
const steps = stepsArg >= 0 ? Number(args[stepsArg + 1]) : quick ? 5 : 10
const configIdx = quick ? [1] : [0, 1, 2]
const PY = "/usr/bin/python3"
const OMP_BLAS = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
const log = (m: string) => console.error(`[bench] ${m}`)

function runWorker(argv: string[], env: NodeJS.ProcessEnv = {}): Record<string, any> {
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(here, "worker.ts"), ...argv], {
    cwd: root, encoding: "utf8", timeout: 3_600_000, maxBuffer: 1 << 26, env: { ...process.env, ...env },
  })
  const line = (r.stdout ?? "").split("\n").find((l) => l.startsWith("@@RESULT "))
  if (!line) return { error: `worker ${argv.join(" ")} failed: ${(r.stderr ?? "").trim().split("\n").slice(-5).join(" | ")}` }
  return JSON.parse(line.slice(9))
}

function runPy(argv: string[], threads: number): Record<string, any> {
  if (!existsSync(PY)) return { error: `${PY} not found (apt-get install python3-torch)` }
  const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) }
  if (existsSync(OMP_BLAS)) env.LD_LIBRARY_PATH = OMP_BLAS + (env.LD_LIBRARY_PATH ? `:${env.LD_LIBRARY_PATH}` : "")
  const r = spawnSync(PY, [path.join(here, "torch_gpt.py"), ...argv], { encoding: "utf8", env, timeout: 3_600_000 })
  if (r.status !== 0) return { error: `torch_gpt.py ${argv[0]} failed: ${(r.stderr ?? "").trim().split("\n").slice(-3).join(" | ")}` }
  return JSON.parse(r.stdout.trim().split("\n").pop()!)
}

/** Training FLOPs per token: 6·N (matmul weights, fwd+bwd) + 12·L·T·d (attention scores and mixing). */
function flopsPerToken(c: (typeof CONFIGS)[number], params: number): number {
  const embed = c.vocabSize * c.dModel + c.contextLength * c.dModel // lookups are not FLOPs…
  const matmulParams = params - embed + c.vocabSize * c.dModel // …but the tied output projection is
  return 6 * matmulParams + 12 * c.nLayers * c.contextLength * c.dModel
}

const t0 = Date.now()
const results: Record<string, any> = { date: new Date().toISOString(), host: { cpus: os.cpus().length, model: os.cpus()[0]?.model, load: os.loadavg() }, steps }

log("numpy matmul peak (1024², 1 and 2 threads)")
results.peak = { 1: runPy(["peak", JSON.stringify({ threads: 1 })], 1), 2: runPy(["peak", JSON.stringify({ threads: 2 })], 2) }

const torchSpec = (threads: number) => JSON.stringify({
  threads, steps, configs: configIdx.map((i) => ({ ...CONFIGS[i] })),
})
log("PyTorch 1 thread"); results.torch1 = runPy(["bench", torchSpec(1)], 1)
log("PyTorch 2 threads"); results.torch2 = runPy(["bench", torchSpec(2)], 2)

results.train = []
for (const i of configIdx) {
  for (const be of ["native", "native before", "native 1 thread", "wasm", "cpu"]) {
    if (be === "cpu" && i !== 0) continue // the pure-JS backend: smallest model only
    log(`train ${be} ${CONFIGS[i].name}`)
    const r = runWorker(["train", be.split(" ")[0], String(i), String(be === "cpu" ? Math.min(steps, 2) : steps), be.endsWith("before") ? "before" : ""],
      be.endsWith("1 thread") ? { MOA_NATIVE_THREADS: "1" } : {})
    results.train.push({ ...r, backend: be })
  }
}
// The 2-thread comparison, interleaved: on a shared 2-core machine a 2-thread run's OpenMP regions
// wait for a core other processes hold, so runs minutes apart see different loads. Alternating
// short PyTorch and native runs (same steps) gives both the same conditions; the best step of all
// rounds is the least disturbed estimate of each side's speed, the median of round medians the typical one.
const duelRounds = quick ? 2 : 3
results.duel = []
for (const i of configIdx.filter((k) => k > 0)) {
  const c = CONFIGS[i]
  const torch: any[] = [], nat: any[] = []
  for (let r = 0; r < duelRounds; r++) {
    log(`2-thread duel ${c.name}, round ${r + 1}/${duelRounds}`)
    const t = runPy(["bench", JSON.stringify({ threads: 2, steps, configs: [{ ...c }] })], 2)
    torch.push(t?.results?.[0] ?? t)
    nat.push(runWorker(["train", "native", String(i), String(steps)]))
  }
  const best = (rs: any[]) => Math.max(...rs.map((x) => x?.tokensPerSecBest ?? 0))
  const med = (rs: any[]) => { const v = rs.map((x) => x?.tokensPerSec ?? 0).sort((a, b) => a - b); return v[Math.floor(v.length / 2)] }
  results.duel.push({ config: c.name, rounds: duelRounds, torchBest: best(torch), nativeBest: best(nat), torchMedian: med(torch), nativeMedian: med(nat),
    loads: [torch, nat].map((rs) => rs.map((x) => x?.error).filter(Boolean)) })
}
results.generate = []
for (const i of configIdx) {
  // native: the fused decode (one addon call per step); native before: tfjs ops (MOA_FUSED_DECODE=0 MOA_FUSED_OPS=0)
  for (const be of ["native", "native before", "wasm"]) {
    log(`generate ${be} ${CONFIGS[i].name}`)
    const r = runWorker(["generate", be.split(" ")[0], String(i)], be === "native before" ? { MOA_FUSED_DECODE: "0", MOA_FUSED_OPS: "0" } : {})
    results.generate.push({ ...r, backend: be })
  }
}
log("parity with PyTorch")
{
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(here, "parity.ts"), "--json"], { cwd: root, encoding: "utf8", timeout: 600_000 })
  const line = (r.stdout ?? "").split("\n").find((l) => l.startsWith("@@RESULT "))
  results.parity = line ? JSON.parse(line.slice(9)) : { error: (r.stderr ?? "").trim().split("\n").slice(-5).join(" | ") }
}
results.seconds = (Date.now() - t0) / 1000

// ---------------------------------------------------------------- report
const fmt = (n: number | undefined, d = 0) => (n === undefined || !Number.isFinite(n) ? "–" : n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }))
const peak2 = results.peak[2]?.gflops as number | undefined
const torchRow = (r: any, name: string) => r?.results?.find((x: any) => x.name === name)
const lines: string[] = []
lines.push(`# Model benchmark: tfjs backends vs PyTorch`, "")
lines.push(`Generated by \`npm run bench:model${args.length ? " -- " + args.join(" ") : ""}\` on ${results.date} (${results.host.cpus} × ${results.host.model}; load average at start ${results.host.load.map((x: number) => x.toFixed(1)).join(" / ")}). ` +
  `Median step of ${steps} after 2 warm-up steps; Adam; random tokens, vocabulary 128. ` +
  `PyTorch ${results.torch2?.blas?.torch ?? "?"} via \`${PY}\` on ${(results.torch2?.blas?.loaded ?? []).filter((l: string) => l.includes("openblas")).map((l: string) => path.basename(path.dirname(l))).slice(0, 1).join("") || "?"} ` +
  `(libraries loaded: ${(results.torch2?.blas?.loaded ?? []).map((l: string) => path.basename(l)).join(", ") || "?"}). ` +
  `Matmul peak (${results.peak[2]?.source ?? "?"}, 1024²): ${fmt(results.peak[1]?.gflops, 1)} GFLOP/s on 1 thread, ${fmt(peak2, 1)} on 2. ` +
  `Figures on this shared 2-core machine move with the load of other processes; the ratios are measured side by side.`, "")
lines.push("## Training tokens/s", "")
lines.push("| model | params | native | native before fusing | wasm + fixes | cpu | PyTorch 1 thr | PyTorch 2 thr | native / PyTorch 1 thr | native / PyTorch 2 thr | before / PyTorch 2 thr | MFU native (before) | MFU PyTorch 2 thr |")
lines.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
results.summary = []
for (const i of configIdx) {
  const c = CONFIGS[i]
  const get = (be: string) => results.train.find((r: any) => r.backend === be && r.config === c.name)
  const nat = get("native"), before = get("native before"), wasm = get("wasm"), cpu = get("cpu")
  const p1 = torchRow(results.torch1, c.name), p2 = torchRow(results.torch2, c.name)
  const params = nat?.params ?? p2?.params
  const fpt = params ? flopsPerToken(c, params) : undefined
  const mfu = (tps?: number) => (tps && fpt && peak2 ? (100 * tps * fpt) / (peak2 * 1e9) : undefined)
  const s = {
    config: c.name, params, native: nat?.tokensPerSec, nativeBefore: before?.tokensPerSec, wasm: wasm?.tokensPerSec, cpu: cpu?.tokensPerSec,
    torch1: p1?.tokensPerSec, torch2: p2?.tokensPerSec,
    ratio1: nat && p1 ? nat.tokensPerSec / p1.tokensPerSec : undefined,
    ratio2: nat && p2 ? nat.tokensPerSec / p2.tokensPerSec : undefined,
    ratioBefore2: before && p2 ? before.tokensPerSec / p2.tokensPerSec : undefined,
    mfuNative: mfu(nat?.tokensPerSec), mfuBefore: mfu(before?.tokensPerSec), mfuTorch2: mfu(p2?.tokensPerSec),
  }
  results.summary.push(s)
  lines.push(`| ${c.name} | ${fmt(params)} | ${fmt(s.native)} | ${fmt(s.nativeBefore)} | ${fmt(s.wasm)} | ${fmt(s.cpu)} | ${fmt(s.torch1)} | ${fmt(s.torch2)} | ${fmt(s.ratio1, 2)}× | ${fmt(s.ratio2, 2)}× | ${fmt(s.ratioBefore2, 2)}× | ${fmt(s.mfuNative, 1)}% (${fmt(s.mfuBefore, 1)}%) | ${fmt(s.mfuTorch2, 1)}% |`)
}
lines.push("", "### Native vs PyTorch, both on 2 threads, interleaved", "")
lines.push(`${duelRounds} rounds per model, each a PyTorch 2-thread run then a native 2-thread run of ${steps} steps (after 2 warm-up steps), one after the other, so both see the same machine load. ` +
  "Best step: the fastest step of all rounds, the least disturbed by other processes; median: the median of the rounds' median steps.", "")
lines.push("| model | PyTorch 2 thr, best step | native 2 thr, best step | native / PyTorch (best) | PyTorch 2 thr, median | native 2 thr, median | native / PyTorch (median) |")
lines.push("|---|---:|---:|---:|---:|---:|---:|")
for (const d of results.duel) {
  lines.push(`| ${d.config} | ${fmt(d.torchBest)} | ${fmt(d.nativeBest)} | ${fmt(d.nativeBest / d.torchBest, 2)}× | ${fmt(d.torchMedian)} | ${fmt(d.nativeMedian)} | ${fmt(d.nativeMedian / d.torchMedian, 2)}× |`)
}
lines.push("", "### The same runs in CPU time (robust to other processes on the machine)", "")
lines.push("Tokens per CPU-second (process user+sys time; for multi-threaded runs this sums all threads, spin-waits included, so it is a measure of work, not of latency). " +
  "On a shared machine this compares single-threaded runs fairly: `native 1 thread` against PyTorch 1 thread.", "")
lines.push("| model | native 1 thread | native (2 thr) | wasm + fixes | cpu | PyTorch 1 thr | PyTorch 2 thr | native 1 thr / PyTorch 1 thr |")
lines.push("|---|---:|---:|---:|---:|---:|---:|---:|")
for (const i of configIdx) {
  const c = CONFIGS[i]
  const get = (be: string) => results.train.find((r: any) => r.backend === be && r.config === c.name)?.tokensPerCpuSec as number | undefined
  const p1 = torchRow(results.torch1, c.name)?.tokensPerCpuSec as number | undefined, p2 = torchRow(results.torch2, c.name)?.tokensPerCpuSec as number | undefined
  const n1 = get("native 1 thread")
  results.summary.find((s: any) => s.config === c.name).cpuRatio1 = n1 && p1 ? n1 / p1 : undefined
  lines.push(`| ${c.name} | ${fmt(n1)} | ${fmt(get("native"))} | ${fmt(get("wasm"))} | ${fmt(get("cpu"))} | ${fmt(p1)} | ${fmt(p2)} | ${n1 && p1 ? fmt(n1 / p1, 2) + "×" : "–"} |`)
}
const errors = [results.torch1, results.torch2, results.peak[1], results.peak[2], ...results.train, ...results.generate].filter((r: any) => r?.error || r?.skipped)
lines.push("", "native: the model package's GPT and AdamW (src/train.ts) on the native backend — what `moa train` runs: fused GELU / LayerNorm / causal-softmax kernels (src/native/ops.ts) and the fused in-place AdamW. " +
  "native before fusing: the same model with those as tfjs ops (`MOA_FUSED_OPS=0`) and the tensor-level AdamW (`step(…, { fused: false })`), i.e. the native backend as it was before. " +
  "MFU counts 6·N + 12·L·T·d FLOPs per token (N = parameters that multiply, the tied output projection included) against the 2-thread numpy peak above.", "")
lines.push(`Model code: ${results.train.find((r: any) => r.source)?.source ?? "?"}. First and last loss of each run (same seed and batch, so backends should agree): ` +
  results.train.filter((r: any) => r.losses).map((r: any) => `${r.backend} ${r.config.split(" ")[0]} ${r.losses[0].toFixed(4)} → ${r.losses[r.losses.length - 1].toFixed(4)}`).join("; ") + ".", "")
lines.push("## Generation tokens/s (greedy, prompt 4 tokens, to the context length)", "")
lines.push("| model | backend | batch | KV cache | tokens/s | tokens per CPU-s | ms per step, first quarter | ms per step, last quarter |")
lines.push("|---|---|---:|---|---:|---:|---:|---:|")
for (const g of results.generate) {
  for (const r of g.rows ?? []) {
    lines.push(`| ${g.config} | ${g.backend} | ${r.batch} | ${r.cache ? "yes" : "no"} | ${fmt(r.tokensPerSec)} | ${fmt(r.tokensPerCpuSec)} | ${fmt(r.msPerStepEarly, 1)} | ${fmt(r.msPerStepLate, 1)} |`)
  }
}
const genRatio: string[] = []
for (const i of configIdx) {
  const c = CONFIGS[i]
  const pick = (be: string, batch = 1) => results.generate.find((g: any) => g.backend === be && g.config === c.name)?.rows?.find((r: any) => r.batch === batch && r.cache)
  const n = pick("native"), o = pick("native before"), w = pick("wasm")
  const n16 = pick("native", 16), o16 = pick("native before", 16), w16 = pick("wasm", 16)
  if (n && w) genRatio.push(`${c.name}: fused native ${(n.tokensPerSec / w.tokensPerSec).toFixed(2)}× in wall time (${(n.tokensPerCpuSec / w.tokensPerCpuSec).toFixed(2)}× in CPU time)` +
    (o ? `, native before fusing ${(o.tokensPerSec / w.tokensPerSec).toFixed(2)}×` : "") +
    (n16 && w16 ? `; batch 16: fused ${(n16.tokensPerSec / w16.tokensPerSec).toFixed(2)}×${o16 ? `, before ${(o16.tokensPerSec / w16.tokensPerSec).toFixed(2)}×` : ""}` : ""))
}
results.generationRatio = genRatio
lines.push("", `KV-cache generation, native / wasm (single stream unless said): ${genRatio.join("; ") || "–"}. ` +
  "native: the fused decode (src/fused-decode.ts, one addon call per step); native before: `MOA_FUSED_DECODE=0 MOA_FUSED_OPS=0`, the model's tfjs ops on the native backend as before this round.", "")
lines.push("## Numerical parity with PyTorch", "")
const par = results.parity
if (par?.error) lines.push(`parity failed: ${par.error}`)
else if (par) lines.push(`Same \`model.safetensors\` in both (${par.config}), same batch: max |Δlogits| ${par.maxLogitDiff?.toExponential(2)}, |Δloss| ${par.lossDiff?.toExponential(2)} (ours ${par.loss?.toFixed(6)} vs torch ${par.torchLoss?.toFixed(6)}), ` +
  `max |Δgrad| over all ${par.gradCount} parameters ${par.maxGradDiff?.toExponential(2)} (relative to the largest gradient ${par.maxGradRel?.toExponential(2)}), on backend ${par.backend}. Command: \`npx tsx packages/model/bench/parity.ts\`.`)
if (errors.length) lines.push("", "## Problems in this run", "", ...errors.map((e: any) => `- ${e.error ?? `${e.backend} ${e.config}: ${e.skipped}`}`))
lines.push("", "Profiles and the history of these numbers (before/after each round of work): docs/native-backend.md.")
lines.push("", `Total benchmark time ${fmt(results.seconds)} s. Raw numbers: \`packages/model/bench/results/bench-model.json\`.`, "")

mkdirSync(path.join(here, "results"), { recursive: true })
writeFileSync(path.join(here, "results/bench-model.json"), JSON.stringify(results, null, 2) + "\n")
mkdirSync(path.join(root, "docs"), { recursive: true })
writeFileSync(path.join(root, "docs/bench-model.md"), lines.join("\n"))
console.log(lines.join("\n"))
