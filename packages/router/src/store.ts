// Gate versions stored in the cluster: weights in the Object Store, the current version
// (and its config) in a KV key the routers watch, so a new gate reaches every router without
// a shared filesystem and without a restart.
import type { NatsConnection } from "@nats-io/nats-core"
import { Kvm, type KV } from "@nats-io/kv"
import { Objm, type ObjectStore } from "@nats-io/obj"
import { featuresFromSpec, type FeatureExtractor } from "./features.ts"
import { Gate, validateGateConfig, type GateConfig } from "./gate.ts"
import type { GateBundle } from "./router.ts"

export const registryBucket = (cluster: string) => `moa_${cluster}_registry`
export const artifactBucket = (cluster: string) => `moa_${cluster}_artifacts`
export const GATE_KEY = "router.gate"
export const gateObjectName = (version: string) => `router/gate/${version}.safetensors`

/** What the KV key holds: the version and its config (the weights are in the Object Store). */
export interface GatePointer {
  readonly version: string
  readonly object: string
  readonly config: GateConfig
  readonly createdAt: string
  /** Free-form metrics from training (routing accuracy etc.). */
  readonly metrics?: Record<string, unknown>
}

const openKv = (nc: NatsConnection, cluster: string): Promise<KV> => new Kvm(nc).create(registryBucket(cluster), { history: 10 })
const openObj = (nc: NatsConnection, cluster: string): Promise<ObjectStore> => new Objm(nc).create(artifactBucket(cluster))

/** Gate files for a local folder: `<dir>/gate.safetensors` + `<dir>/gate.json`. */
export const gateFiles = (gate: Gate, version: string) => ({
  weights: gate.toSafetensors({ version }),
  config: JSON.stringify({ version, ...gate.config }, null, 2),
})

export const bundleFrom = (config: GateConfig, weights: Uint8Array, version: string, external?: Parameters<typeof featuresFromSpec>[1]): GateBundle => {
  const cfg = validateGateConfig(config)
  const features: FeatureExtractor = featuresFromSpec(cfg.features, external)
  return { gate: Gate.fromSafetensors(cfg, weights), features, version }
}

/** Store a gate as a new version and make it current. Returns the version. */
export const publishGate = async (nc: NatsConnection, cluster: string, gate: Gate, opts: { version?: string; metrics?: Record<string, unknown> } = {}): Promise<GatePointer> => {
  const version = opts.version ?? `g${Date.now().toString(36)}`
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(version)) throw new Error(`gate version "${version}" may only contain letters, digits, "_" and "-"`)
  const obj = await openObj(nc, cluster)
  const object = gateObjectName(version)
  await obj.putBlob({ name: object, description: `router gate ${version}` }, gate.toSafetensors({ version }))
  const pointer: GatePointer = { version, object, config: gate.config, createdAt: new Date().toISOString(), metrics: opts.metrics }
  const kv = await openKv(nc, cluster)
  await kv.put(GATE_KEY, new TextEncoder().encode(JSON.stringify(pointer)))
  return pointer
}

const parsePointer = (bytes: Uint8Array): GatePointer => {
  const p = JSON.parse(new TextDecoder().decode(bytes)) as GatePointer
  if (typeof p?.version !== "string" || typeof p?.object !== "string" || typeof p?.config !== "object")
    throw new Error(`the KV key ${GATE_KEY} does not hold a gate pointer {version, object, config}`)
  return p
}

/** Load the current gate (or a given pointer) from the cluster; undefined when none was published. */
export const loadGate = async (nc: NatsConnection, cluster: string, pointer?: GatePointer, external?: Parameters<typeof featuresFromSpec>[1]): Promise<GateBundle | undefined> => {
  let p = pointer
  if (!p) {
    const e = await (await openKv(nc, cluster)).get(GATE_KEY)
    if (!e || e.operation !== "PUT" || e.value.length === 0) return undefined
    p = parsePointer(e.value)
  }
  const weights = await (await openObj(nc, cluster)).getBlob(p.object)
  if (!weights) throw new Error(`gate ${p.version}: object ${p.object} is missing from ${artifactBucket(cluster)}; republish it with \`moa router train\``)
  return bundleFrom(p.config, weights, p.version, external)
}

/**
 * Watch the gate pointer and call `onGate` with each new version (including the current one at
 * start). Returns a stop function. Errors loading a version go to `onError`; the old gate stays.
 */
export const watchGate = async (
  nc: NatsConnection,
  cluster: string,
  onGate: (bundle: GateBundle, pointer: GatePointer) => void,
  opts: { onError?: (e: unknown) => void; external?: Parameters<typeof featuresFromSpec>[1] } = {},
): Promise<() => Promise<void>> => {
  const kv = await openKv(nc, cluster)
  const it = await kv.watch({ key: GATE_KEY })
  const loop = (async () => {
    for await (const e of it) {
      if (e.operation !== "PUT" || e.value.length === 0) continue
      try {
        const p = parsePointer(e.value)
        const b = await loadGate(nc, cluster, p, opts.external)
        if (b) onGate(b, p)
      } catch (err) {
        opts.onError?.(err)
      }
    }
  })()
  return async () => {
    it.stop()
    await loop
  }
}
