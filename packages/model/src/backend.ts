// Choosing the compute backend.
//
// Default order: tensorflow (when @tensorflow/tfjs-node-gpu or -node can be imported;
// never a dependency, so a default install never downloads libtensorflow) → native
// (the addon in ./native, when built) → wasm with the kernel fixes → cpu.
// `initBackend(name)` or env MOA_BACKEND picks one explicitly; an explicit choice that
// cannot be honoured is an error, the default order falls through with logged reasons.

import * as tf from "@tensorflow/tfjs"
import { installWasmKernelFixes, wasmKernelFixesInstalled } from "./wasm-kernels.js"

// tfjs prints a banner on the first use of its cpu backend in Node ("install tfjs-node"); moa
// chooses the backend itself and logs which one and why, and tfjs-node cannot be installed on
// many machines, so the banner is noise. PROD mode only silences tfjs's console warnings;
// MOA_TFJS_WARNINGS=1 keeps them.
if (process.env.MOA_TFJS_WARNINGS !== "1") tf.env().set("PROD", true)

export type BackendName = "native" | "tensorflow" | "wasm" | "cpu"
export const BACKEND_NAMES: readonly BackendName[] = ["tensorflow", "native", "wasm", "cpu"]

export interface BackendInfo {
  /** the backend actually in use */
  readonly name: BackendName
  /** why this one: what was requested, what was tried and why it was skipped */
  readonly reason: string
  /** wasm only: whether the kernel fixes of COMPUTE.md are active */
  readonly kernelFixes: boolean
  readonly tfjsVersion: string
}

/** What ./native/index.ts (owned by the native-backend helper) must export. */
export interface NativeBackendModule {
  available(): boolean
  /** registers a tfjs backend; returns its registered name (default "native") */
  register(): Promise<string | void>
}

let current: BackendInfo | undefined
let tfBackendName: string | undefined

export function backendInfo(): BackendInfo | undefined {
  return current
}

function parseName(name: string, source: string): BackendName {
  if ((BACKEND_NAMES as readonly string[]).includes(name)) return name as BackendName
  throw new Error(`${source}="${name}" is not a backend; use one of ${BACKEND_NAMES.join(", ")}`)
}

type Attempt = { ok: true; reason: string; kernelFixes?: boolean; tfName?: string } | { ok: false; reason: string }

async function tryTensorflow(): Promise<Attempt> {
  const errors: string[] = []
  for (const pkg of ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"]) {
    try {
      const spec = pkg // a variable: bundlers and tsc must not resolve it
      await import(spec)
      if (!tf.findBackend("tensorflow")) throw new Error("imported but no 'tensorflow' backend registered")
      return { ok: true, reason: `${pkg} imported`, tfName: "tensorflow" }
    } catch (e) {
      errors.push(`${pkg} not importable (${firstLine(e)})`)
    }
  }
  return { ok: false, reason: errors.join("; ") }
}

async function tryNative(): Promise<Attempt> {
  let mod: NativeBackendModule
  try {
    const spec = "./native/index.js"
    mod = (await import(spec)) as NativeBackendModule
  } catch (e) {
    return { ok: false, reason: `native module not present (${firstLine(e)})` }
  }
  try {
    if (typeof mod.available !== "function" || !mod.available())
      return { ok: false, reason: "native addon not built" }
    const name = (await mod.register()) || "native"
    return { ok: true, reason: "native addon built and registered", tfName: name }
  } catch (e) {
    return { ok: false, reason: `native addon failed to register (${firstLine(e)})` }
  }
}

async function tryWasm(): Promise<Attempt> {
  try {
    await import("@tensorflow/tfjs-backend-wasm")
    if (!(await tf.setBackend("wasm"))) return { ok: false, reason: "wasm backend failed to initialise" }
    const fixes = installWasmKernelFixes()
    if (!fixes.installed) console.warn(`[moa/model] ${fixes.reason}`)
    return { ok: true, reason: fixes.reason, kernelFixes: fixes.installed, tfName: "wasm" }
  } catch (e) {
    return { ok: false, reason: `wasm backend unavailable (${firstLine(e)})` }
  }
}

const attempts: Record<BackendName, () => Promise<Attempt>> = {
  tensorflow: tryTensorflow,
  native: tryNative,
  wasm: tryWasm,
  cpu: async () => ({ ok: true, reason: "pure-JS cpu backend" }),
}

/**
 * Select the backend. `name` (or env MOA_BACKEND) forces one; otherwise the first that
 * works in the order tensorflow → native → wasm → cpu. Idempotent for the same request.
 */
export async function initBackend(
  name?: BackendName,
  opts: { log?: (msg: string) => void } = {},
): Promise<BackendInfo> {
  const log = opts.log ?? (() => {})
  // The cpu backend prints an advert for tfjs-node on first use; our own report replaces it.
  const cpu = tf.findBackend("cpu") as unknown as { firstUse?: boolean } | null
  if (cpu) cpu.firstUse = false
  const env = process.env.MOA_BACKEND?.trim()
  const requested = name ? parseName(name, "initBackend name") : env ? parseName(env, "MOA_BACKEND") : undefined
  if (current && (requested === undefined || requested === current.name)) {
    if (tfBackendName && tf.getBackend() !== tfBackendName) await tf.setBackend(tfBackendName)
    return current
  }
  const order = requested ? [requested] : BACKEND_NAMES
  const skipped: string[] = []
  for (const candidate of order) {
    const r = await attempts[candidate]()
    if (!r.ok) {
      skipped.push(`${candidate}: ${r.reason}`)
      log(`backend ${candidate} skipped: ${r.reason}`)
      continue
    }
    const tfName = r.tfName ?? candidate
    if (tf.getBackend() !== tfName && !(await tf.setBackend(tfName))) {
      skipped.push(`${candidate}: tf.setBackend("${tfName}") failed`)
      continue
    }
    await tf.ready()
    tfBackendName = tfName
    const why = requested
      ? `requested${name ? "" : " by MOA_BACKEND"}; ${r.reason}`
      : `${r.reason}${skipped.length ? ` (skipped ${skipped.join("; ")})` : ""}`
    current = {
      name: candidate,
      reason: why,
      kernelFixes: candidate === "wasm" ? wasmKernelFixesInstalled() : false,
      tfjsVersion: tf.version.tfjs,
    }
    log(`backend ${candidate}: ${why}`)
    return current
  }
  throw new Error(
    `backend ${requested} is not available: ${skipped.join("; ")}. ` +
      `Unset MOA_BACKEND or pick one of ${BACKEND_NAMES.join(", ")} that is installed.`,
  )
}

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e)
  return msg.split("\n")[0].slice(0, 200)
}
