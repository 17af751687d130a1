/**
 * Adapter weights over NATS: every adapter version an expert trains is also put in the cluster's
 * Object Store bucket, and an expert asked for a version it does not have on its own disk (a
 * replica on another host, a fresh artifacts folder after a move) fetches it from there into
 * its own artifacts folder before it loads it. No shared filesystem is needed.
 *
 *   bucket  moa_weights_<cluster>
 *   objects <expert>/<adapter>/<version>/adapter_config.json
 *           <expert>/<adapter>/<version>/adapter_model.safetensors
 *
 * Everything that comes from the bucket is checked before it touches the disk: the adapter and
 * version names (they name folders), the file names (only PEFT's two files), the size, and the
 * SHA-256 digest (the Object Store client refuses a corrupt object). The files land in a
 * temporary folder inside the artifacts folder and are renamed into place only after the
 * adapter loads against this expert's base model (its fingerprint must match).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { NatsConnection } from "@nats-io/nats-core"
import { Objm, type ObjectStore } from "@nats-io/obj"
import { Kvm } from "@nats-io/kv"
import { moaError } from "@moa/protocol"
import { checkAdapterName } from "./adapters.ts"

export const weightsBucket = (cluster: string) => `moa_weights_${cluster}`
/** The coordinator's adapter registry (KV): `<expert>` → `{ expert, adapter, current, history }`. */
export const registryBucket = (cluster: string) => `moa_adapters_${cluster}`
export const weightsPrefix = (expert: string, adapter: string, version: string) => `${expert}/${adapter}/${version}/`
/** The files of a PEFT adapter folder that travel (nothing else is written from the bucket). */
export const ADAPTER_FILES: ReadonlyArray<string> = ["adapter_config.json", "adapter_model.safetensors"]
/** Largest adapter file fetched (a LoRA of a small model is a few MB; a full fine-tune of a big one is not an adapter). */
export const MAX_ADAPTER_FILE_BYTES = 2 * 1024 ** 3

const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/
const checkVersion = (v: string) => {
  if (!VERSION_RE.test(v) || v.includes("..")) throw moaError("BAD_REQUEST", `version ${JSON.stringify(v)} must be 1–64 letters, digits, "_", "-" or "." (it names a folder)`, { field: "version" })
  return v
}

const open = async (nc: NatsConnection, cluster: string, create: boolean): Promise<ObjectStore | undefined> => {
  const objm = new Objm(nc)
  try {
    // open first: an expert's credential may read and write the bucket but not create streams
    const os = await objm.open(weightsBucket(cluster))
    await os.status() // throws when the bucket does not exist
    return os
  } catch (e) {
    if (!create) return undefined // no bucket (or no JetStream): nothing stored
    return objm.create(weightsBucket(cluster))
  }
}

/** Put a saved version's PEFT files in the bucket; returns the object names. */
export async function uploadVersion(nc: NatsConnection, cluster: string, expert: string, adapter: string, version: string, dir: string): Promise<string[]> {
  const os = await open(nc, cluster, true)
  const names: string[] = []
  for (const f of ADAPTER_FILES) {
    const p = path.join(dir, f)
    if (!fs.existsSync(p)) continue
    const name = weightsPrefix(expert, checkAdapterName(adapter), checkVersion(version)) + f
    await os!.putBlob({ name }, new Uint8Array(fs.readFileSync(p)))
    names.push(name)
  }
  return names
}

/** Which versions of `adapter` the bucket holds for `expert` (for error messages). */
export async function storedVersions(nc: NatsConnection, cluster: string, expert: string, adapter: string): Promise<string[]> {
  const os = await open(nc, cluster, false)
  if (!os) return []
  const prefix = `${expert}/${adapter}/`
  const vs = new Set<string>()
  for (const i of await os.list()) if (!i.deleted && i.name.startsWith(prefix)) vs.add(i.name.slice(prefix.length).split("/")[0]!)
  return [...vs].sort()
}

/**
 * Fetch `<expert>/<adapter>/<version>/` from the bucket into `<adaptersDir>/<adapter>/<version>`
 * (atomically: a temporary folder renamed into place once `validate` accepts it). Returns the
 * folder, or undefined when the bucket does not hold that version.
 */
export async function fetchVersion(
  nc: NatsConnection,
  cluster: string,
  expert: string,
  adapter: string,
  version: string,
  adaptersDir: string,
  validate: (dir: string) => void,
): Promise<string | undefined> {
  checkAdapterName(adapter)
  checkVersion(version)
  const os = await open(nc, cluster, false)
  if (!os) return undefined
  const prefix = weightsPrefix(expert, adapter, version)
  const infos = (await os.list()).filter((i) => !i.deleted && i.name.startsWith(prefix))
  if (infos.length === 0) return undefined
  for (const i of infos) {
    const f = i.name.slice(prefix.length)
    if (!ADAPTER_FILES.includes(f)) throw moaError("BAD_REQUEST", `object ${JSON.stringify(i.name)} in ${weightsBucket(cluster)} is not one of an adapter's files (${ADAPTER_FILES.join(", ")}); refusing to fetch ${adapter}@${version}`, { field: "version" })
    if (i.size > MAX_ADAPTER_FILE_BYTES) throw moaError("BAD_REQUEST", `object ${i.name} is ${i.size} bytes, more than the ${MAX_ADAPTER_FILE_BYTES} an adapter file may have`, { field: "version" })
  }
  if (!infos.some((i) => i.name.endsWith("/adapter_config.json"))) throw moaError("BAD_REQUEST", `${weightsBucket(cluster)} holds ${prefix} without adapter_config.json; it cannot be loaded`, { field: "version" })
  const final = path.join(adaptersDir, adapter, version)
  if (path.relative(adaptersDir, final).startsWith("..")) throw moaError("BAD_REQUEST", `adapter folder ${final} would leave ${adaptersDir}`, { field: "version" })
  const tmp = `${final}.tmp-fetch-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`
  fs.mkdirSync(tmp, { recursive: true })
  try {
    for (const i of infos) {
      const data = await os.getBlob(i.name) // the client checks the SHA-256 digest
      if (!data) throw moaError("NOT_FOUND", `object ${i.name} vanished from ${weightsBucket(cluster)} while it was fetched`, { field: "version" })
      fs.writeFileSync(path.join(tmp, i.name.slice(prefix.length)), data)
    }
    validate(tmp)
    if (fs.existsSync(final)) fs.renameSync(final, `${final}.old-${process.pid}-${Date.now()}`)
    fs.renameSync(tmp, final)
    return final
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true })
    throw e
  }
}

export interface RegistryCurrent {
  readonly adapter: string
  readonly current: string
}

/**
 * Watch the registry entry of `expert` and call `apply` with `{ adapter, current }` for its last
 * value and every change (one at a time). Waits for the bucket to exist (the coordinator creates
 * it), re-opens the watch when it ends; an entry that is not a registry entry, or an `apply` that
 * fails, is logged and skipped.
 */
export function followRegistry(
  nc: NatsConnection,
  cluster: string,
  expert: string,
  apply: (e: RegistryCurrent) => Promise<void>,
  log: (msg: string, data?: Record<string, unknown>) => void,
  retryMs = 5000,
): { stop(): void } {
  let stopped = false
  let iter: { stop(): void } | undefined
  void (async () => {
    while (!stopped && !nc.isClosed()) {
      try {
        const kv = await new Kvm(nc).open(registryBucket(cluster))
        await kv.status() // throws when the bucket does not exist yet
        const w = await kv.watch({ key: expert })
        iter = w
        if (stopped) w.stop()
        for await (const e of w) {
          if (e.operation !== "PUT") continue
          let v: Partial<RegistryCurrent> = {}
          try {
            v = e.json<Partial<RegistryCurrent>>()
          } catch {
            // checked below
          }
          if (typeof v.adapter !== "string" || typeof v.current !== "string" || !/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(v.adapter) || !(v.current === "base" || VERSION_RE.test(v.current))) {
            log("registry entry is not { adapter, current }: ignored", { key: e.key, revision: e.revision })
            continue
          }
          try {
            await apply({ adapter: v.adapter, current: v.current })
          } catch (err) {
            log("could not serve the registry's version", { adapter: v.adapter, current: v.current, error: String((err as Error)?.message ?? err) })
          }
        }
      } catch (err) {
        log("adapter registry not available yet", { bucket: registryBucket(cluster), error: String((err as Error)?.message ?? err) })
      }
      if (!stopped) await new Promise((r) => setTimeout(r, retryMs))
    }
  })()
  return {
    stop: () => {
      stopped = true
      iter?.stop()
    },
  }
}
