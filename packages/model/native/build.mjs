#!/usr/bin/env node
// Builds the native CPU backend addon (native/build/Release/moa_native.node) with node-gyp.
//
// Runs as the install script of @moa/model and as `npm run build:native` at the root.
// It NEVER fails the install: without a C compiler, without OpenBLAS headers (Debian:
// libopenblas-dev) or when node-gyp fails, it prints why and exits 0; the model then runs on
// wasm (`available()` is false, and backend selection logs the reason).
// Env: MOA_SKIP_NATIVE=1 skips the build; MOA_BLAS_LIBS overrides the linker flags for BLAS.
import { spawnSync } from "node:child_process"
import { existsSync, readFileSync, rmSync } from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"

const here = path.dirname(fileURLToPath(import.meta.url))
const strict = process.argv.includes("--strict") // exit 1 on failure (for `npm run build:native`)
const log = (msg) => console.log(`[moa native] ${msg}`)
const giveUp = (why) => {
  log(`not built: ${why}`)
  log("the model will use the wasm backend; install a C compiler and libopenblas-dev, then run `npm run build:native`")
  process.exit(strict ? 1 : 0)
}

if (process.env.MOA_SKIP_NATIVE === "1") giveUp("MOA_SKIP_NATIVE=1")
if (process.platform !== "linux" && process.platform !== "darwin") giveUp(`platform ${process.platform} not supported`)

const run = (cmd, args, opts = {}) => spawnSync(cmd, args, { encoding: "utf8", timeout: 300_000, ...opts })

const cc = process.env.CC || "cc"
const ver = run(cc, ["--version"])
if (ver.error || ver.status !== 0) giveUp(`no C compiler (\`${cc} --version\` failed)`)
const probe = run(cc, ["-E", "-x", "c", "-"], { input: "#include <cblas.h>\n" })
if (probe.status !== 0) giveUp("OpenBLAS headers not found (<cblas.h>; Debian/Ubuntu: apt-get install libopenblas-dev)")
const omp = run(cc, ["-fopenmp", "-E", "-x", "c", "-"], { input: "#include <omp.h>\n" })
if (omp.status !== 0) giveUp(`${cc} has no OpenMP (-fopenmp)`)

// node-gyp: the one npm hands to lifecycle scripts, else the one bundled with npm.
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(path.dirname(process.execPath), "../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"),
].filter(Boolean)
let gyp = candidates.find((p) => existsSync(p))
if (!gyp) {
  const root = run("npm", ["root", "-g"])
  const p = root.status === 0 ? path.join(root.stdout.trim(), "npm/node_modules/node-gyp/bin/node-gyp.js") : ""
  if (p && existsSync(p)) gyp = p
}
if (!gyp) giveUp("node-gyp not found (it ships with npm)")

// Headers: use the ones installed next to this node (distro or tarball install) when they match
// its version, so no download is needed; otherwise node-gyp fetches them.
const args = [gyp, "rebuild"]
for (const prefix of [path.resolve(path.dirname(process.execPath), ".."), "/usr", "/usr/local"]) {
  const vh = path.join(prefix, "include/node/node_version.h")
  if (!existsSync(path.join(prefix, "include/node/common.gypi")) || !existsSync(vh)) continue
  const h = readFileSync(vh, "utf8")
  const v = ["MAJOR", "MINOR", "PATCH"].map((k) => h.match(new RegExp(`define NODE_${k}_VERSION (\\d+)`))?.[1]).join(".")
  if (`v${v}` === process.version) {
    args.push(`--nodedir=${prefix}`)
    break
  }
}

log(`building with ${path.basename(gyp)} ${args.slice(1).join(" ")} (${ver.stdout.split("\n")[0]})`)
const t0 = Date.now()
const r = run(process.execPath, args, { cwd: here, stdio: ["ignore", "pipe", "pipe"] })
if (r.error || r.status !== 0) {
  const tail = `${r.stdout ?? ""}\n${r.stderr ?? ""}`.trim().split("\n").slice(-15).join("\n")
  rmSync(path.join(here, "build"), { recursive: true, force: true }) // never leave a half-built addon
  giveUp(`node-gyp failed (${r.error?.message ?? `exit ${r.status}`}):\n${tail}`)
}

// Load it once in a child process to prove it links (a missing libopenblas.so.0 shows up here).
const out = path.join(here, "build/Release/moa_native.node")
const check = run(process.execPath, ["-e", `const m=require(${JSON.stringify(out)});m.setThreads(1);console.log(m.config())`])
if (check.status !== 0) {
  rmSync(path.join(here, "build"), { recursive: true, force: true })
  giveUp(`built but does not load: ${(check.stderr || "").trim().split("\n").slice(0, 3).join(" ")}`)
}
log(`built ${path.relative(process.cwd(), out)} in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${check.stdout.trim()}`)
