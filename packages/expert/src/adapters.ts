/**
 * Adapters of one expert: a registry of named adapters and their versions on disk, and a bounded
 * set of them held in memory (least recently used leaves first; a later request loads it back).
 *
 * Layout under the expert's artifacts folder (each version folder is PEFT's layout, written
 * atomically by tune's Adapter.save):
 *
 *   <artifacts>/adapters/<name>/<version>/adapter_config.json
 *   <artifacts>/adapters/<name>/<version>/adapter_model.safetensors
 *   <artifacts>/adapters/<name>/CURRENT            the version requests get by default
 *   <artifacts>/adapters/<name>/<version>.json     how the version was made (train job summary)
 *
 * Adapters loaded from a folder outside the artifacts (`adapters-load { name, path }`) are
 * registered with that folder as their one version, "ext".
 *
 * A request names `name` (current version) or `name@version`.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { GPT } from "@moa/model"
import { Adapter, AdapterError } from "@moa/tune"
import { moaError } from "@moa/protocol"

export interface AdapterVersionInfo {
  readonly version: string
  readonly dir: string
}

interface Registered {
  readonly name: string
  current: string
  readonly versions: Map<string, string> // version → folder
}

interface Loaded {
  readonly key: string // name@version
  readonly adapter: Adapter
  lastUsed: number
  uses: number
  pins: number
  /** unloaded or evicted while pinned: dispose when the last pin goes */
  doomed: boolean
}

export interface AdapterListEntry {
  name: string
  current: string
  versions: string[]
  loaded: string[]
}

const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/
export const checkAdapterName = (name: unknown, field = "name"): string => {
  if (typeof name !== "string" || !/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(name))
    throw moaError("BAD_REQUEST", `${field} ${JSON.stringify(name)} must be 1–64 letters, digits, "_" or "-" (it names a folder under the artifacts)`, { field })
  return name
}

export class AdapterStore {
  private readonly registry = new Map<string, Registered>()
  private readonly loaded = new Map<string, Loaded>()
  private clock = 0
  evictions = 0
  loads = 0

  constructor(
    private readonly model: GPT,
    private readonly fingerprint: string,
    readonly artifacts: string,
    public maxLoaded: number,
    /** called before an adapter object is disposed (the engine detaches it if active) */
    private readonly beforeDispose: (a: Adapter) => void,
  ) {
    if (!(Number.isInteger(maxLoaded) && maxLoaded >= 1)) throw new Error(`maxLoadedAdapters must be an integer ≥ 1, got ${maxLoaded}`)
    this.scan()
  }

  get adaptersDir(): string {
    return path.join(this.artifacts, "adapters")
  }

  /** Register every adapter version already saved under the artifacts folder (restarts keep them). */
  private scan() {
    const root = this.adaptersDir
    if (!fs.existsSync(root)) return
    for (const name of fs.readdirSync(root)) {
      const dir = path.join(root, name)
      if (!fs.statSync(dir).isDirectory()) continue
      const versions = new Map<string, string>()
      for (const v of fs.readdirSync(dir)) {
        const vd = path.join(dir, v)
        if (VERSION_RE.test(v) && !v.includes(".tmp-") && !v.includes(".old-") && fs.statSync(vd).isDirectory() && fs.existsSync(path.join(vd, "adapter_config.json")))
          versions.set(v, vd)
      }
      if (versions.size === 0) continue
      let current = ""
      try {
        current = fs.readFileSync(path.join(dir, "CURRENT"), "utf8").trim()
      } catch {
        // no pointer: the newest version
      }
      if (!versions.has(current)) current = [...versions.keys()].sort(compareVersions).at(-1)!
      this.registry.set(name, { name, current, versions })
    }
  }

  has(name: string): boolean {
    return this.registry.has(name)
  }

  /** Whether `version` of `name` is registered (on this expert's disk or loaded from a folder). */
  hasVersion(name: string, version: string): boolean {
    return this.registry.get(name)?.versions.has(version) ?? false
  }

  /** Throws BAD_REQUEST unless `dir` holds an adapter that loads against this base model. */
  validate(dir: string, field = "version"): void {
    this.loadFolder(dir, field).dispose()
  }

  /** `name` or `name@version` → the registered name and version, or a NOT_FOUND error saying what exists. */
  resolve(ref: string, field = "adapter"): { name: string; version: string; dir: string } {
    const at = ref.indexOf("@")
    const name = at >= 0 ? ref.slice(0, at) : ref
    const reg = this.registry.get(name)
    if (!reg) {
      const known = [...this.registry.keys()]
      throw moaError("NOT_FOUND", `unknown adapter "${name}"; this expert has ${known.length ? known.map((k) => `"${k}"`).join(", ") : "no adapters"} (load one with the adapters-load verb)`, { field })
    }
    const version = at >= 0 ? ref.slice(at + 1) : reg.current
    const dir = reg.versions.get(version)
    if (!dir)
      throw moaError("NOT_FOUND", `adapter "${name}" has no version "${version}"; it has ${[...reg.versions.keys()].join(", ")}`, { field })
    return { name, version, dir }
  }

  /**
   * The in-memory adapter for `ref`, loading it (and evicting the least recently used one beyond
   * the bound) when needed. The caller pins it for the time it uses it.
   */
  acquire(ref: string, field = "adapter"): { adapter: Adapter; key: string; release: () => void } {
    const { name, version, dir } = this.resolve(ref, field)
    const key = `${name}@${version}`
    let l = this.loaded.get(key)
    if (!l) {
      const adapter = this.loadFolder(dir, field)
      l = { key, adapter, lastUsed: 0, uses: 0, pins: 0, doomed: false }
      this.loaded.set(key, l)
      this.loads++
      this.evict(key)
    }
    l.lastUsed = ++this.clock
    l.uses++
    l.pins++
    const entry = l
    let released = false
    return {
      adapter: l.adapter,
      key,
      release: () => {
        if (released) return
        released = true
        entry.pins--
        if (entry.pins === 0 && entry.doomed) this.disposeLoaded(entry)
      },
    }
  }

  private loadFolder(dir: string, field: string): Adapter {
    try {
      return Adapter.load(dir, this.model, { fingerprint: this.fingerprint })
    } catch (e) {
      if (e instanceof AdapterError) throw moaError("BAD_REQUEST", e.message, { field })
      throw moaError("INTERNAL", `loading adapter ${dir} failed: ${(e as Error).message}`, { field })
    }
  }

  /** Keep at most maxLoaded adapters in memory: drop the least recently used ones (never `keep`). */
  private evict(keep?: string) {
    const live = [...this.loaded.values()].filter((l) => !l.doomed)
    let excess = live.length - this.maxLoaded
    if (excess <= 0) return
    for (const l of live.sort((a, b) => a.lastUsed - b.lastUsed)) {
      if (excess <= 0) break
      if (l.key === keep) continue
      this.drop(l)
      this.evictions++
      excess--
    }
  }

  private drop(l: Loaded) {
    this.loaded.delete(l.key)
    if (l.pins > 0) l.doomed = true
    else this.disposeLoaded(l)
  }

  private disposeLoaded(l: Loaded) {
    this.beforeDispose(l.adapter)
    l.adapter.dispose()
  }

  /**
   * Register an adapter: from a folder (`path`, validated by loading it now), or switch the
   * current version of a registered adapter (`version`). Returns the resolved entry.
   */
  load(req: { name: string; path?: string; version?: string }): AdapterListEntry {
    const name = checkAdapterName(req.name)
    if (req.path !== undefined) {
      const dir = path.resolve(req.path)
      if (!fs.existsSync(dir)) throw moaError("BAD_REQUEST", `adapter folder ${dir} does not exist`, { field: "path" })
      const version = req.version ?? "ext"
      if (!VERSION_RE.test(version)) throw moaError("BAD_REQUEST", `version ${JSON.stringify(version)} must be letters, digits, "_", "-" or "."`, { field: "version" })
      const probe = this.loadFolder(dir, "path") // validate before registering
      const reg = this.registry.get(name) ?? { name, current: version, versions: new Map<string, string>() }
      // replace what was loaded under this key
      const old = this.loaded.get(`${name}@${version}`)
      if (old) this.drop(old)
      reg.versions.set(version, dir)
      reg.current = version
      this.registry.set(name, reg)
      const key = `${name}@${version}`
      this.loaded.set(key, { key, adapter: probe, lastUsed: ++this.clock, uses: 0, pins: 0, doomed: false })
      this.loads++
      this.evict(key)
      return this.entry(reg)
    }
    if (req.version === undefined) throw moaError("BAD_REQUEST", "adapters-load needs `path` (a PEFT adapter folder) or `version` (a saved version to make current)", { field: "path" })
    const { version } = this.resolve(`${name}@${req.version}`, "version")
    const reg = this.registry.get(name)!
    reg.current = version
    this.writeCurrent(name, version)
    return this.entry(reg)
  }

  /** Forget an adapter (all versions stay on disk; only the registration and memory go). */
  unload(nameIn: string): { name: string; unloaded: string[] } {
    const name = checkAdapterName(nameIn)
    const reg = this.registry.get(name)
    if (!reg) throw moaError("NOT_FOUND", `unknown adapter "${name}"; nothing to unload (adapters: ${[...this.registry.keys()].join(", ") || "none"})`, { field: "name" })
    const gone: string[] = []
    for (const l of [...this.loaded.values()]) {
      if (l.key.startsWith(`${name}@`)) {
        this.drop(l)
        gone.push(l.key)
      }
    }
    this.registry.delete(name)
    return { name, unloaded: gone }
  }

  /** Register a version just saved under the artifacts folder; optionally make it current. */
  addVersion(name: string, version: string, dir: string, makeCurrent: boolean) {
    const reg = this.registry.get(name) ?? { name, current: version, versions: new Map<string, string>() }
    reg.versions.set(version, dir)
    if (makeCurrent || !this.registry.has(name)) reg.current = version
    this.registry.set(name, reg)
    if (reg.current === version) this.writeCurrent(name, version)
  }

  /** A fresh version id for `name`: v1, v2, … (one more than any on disk or in `alsoTaken`, e.g. the versions other replicas put in the Object Store). */
  nextVersion(name: string, alsoTaken: ReadonlyArray<string> = []): string {
    const dir = path.join(this.adaptersDir, name)
    const taken = new Set([...(this.registry.get(name)?.versions.keys() ?? []), ...(fs.existsSync(dir) ? fs.readdirSync(dir) : []), ...alsoTaken])
    let n = 1
    for (const v of taken) {
      const m = /^v(\d+)$/.exec(v)
      if (m) n = Math.max(n, Number(m[1]) + 1)
    }
    while (taken.has(`v${n}`)) n++
    return `v${n}`
  }

  private writeCurrent(name: string, version: string) {
    const dir = path.join(this.adaptersDir, name)
    if (!fs.existsSync(dir)) return // an external adapter: nothing on disk to point at
    const tmp = path.join(dir, `CURRENT.tmp-${process.pid}`)
    fs.writeFileSync(tmp, version + "\n")
    fs.renameSync(tmp, path.join(dir, "CURRENT"))
  }

  private entry(reg: Registered): AdapterListEntry {
    return {
      name: reg.name,
      current: reg.current,
      versions: [...reg.versions.keys()].sort(compareVersions),
      loaded: [...this.loaded.keys()].filter((k) => k.startsWith(`${reg.name}@`)).map((k) => k.slice(reg.name.length + 1)),
    }
  }

  list(): AdapterListEntry[] {
    return [...this.registry.values()].sort((a, b) => a.name.localeCompare(b.name)).map((r) => this.entry(r))
  }

  /** name@version keys in memory, least recently used first. */
  loadedKeys(): string[] {
    return [...this.loaded.values()].sort((a, b) => a.lastUsed - b.lastUsed).map((l) => l.key)
  }

  dispose() {
    for (const l of this.loaded.values()) this.disposeLoaded(l)
    this.loaded.clear()
  }
}

/** v2 < v10; other names alphabetically. */
export function compareVersions(a: string, b: string): number {
  const ma = /^v(\d+)$/.exec(a)
  const mb = /^v(\d+)$/.exec(b)
  if (ma && mb) return Number(ma[1]) - Number(mb[1])
  if (ma) return 1
  if (mb) return -1
  return a.localeCompare(b)
}
