/**
 * `defineExpert`: a model-backed expert agent for cluster files.
 *
 * ```ts
 * import { defineCluster } from "@moa/runtime"
 * import { defineExpert } from "@moa/expert"
 * export default defineCluster({
 *   name: "skills",
 *   agents: [defineExpert({ name: "add", model: "examples/skills/base", adapters: { add: "examples/skills/adapters/add" }, defaultAdapter: "add" })],
 * })
 * ```
 *
 * Verbs (subject `moa.<cluster>.<name>.<verb>`; NATS subject tokens cannot hold dots, so the
 * adapter verbs are `adapters-load`, not `adapters.load`):
 *   generate         protocol GenerateRequest → GenerateResponse, or a stream of GenerateChunk
 *   score            protocol ScoreRequest → ScoreResponse
 *   model-info       model config, parameters, backend, adapters, batching stats, versions
 *   adapters-list    {} → { adapters: [...] }
 *   adapters-load    { name, path? , version? } → the adapter's entry
 *   adapters-unload  { name } → { name, unloaded }
 *   train            TrainRequest → TrainResponse (see train.ts)
 * The runtime's built-in `info` and `health` answer too; `info.metadata` carries model, backend,
 * params and the adapters loaded at start.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Schema } from "effect"
import { backendInfo, initBackend, loadCheckpoint, type BackendName } from "@moa/model"
import { baseFingerprint } from "@moa/tune"
import { moaError, type GenerateChunk, type GenerateRequest, type GenerateResponse, type ScoreRequest } from "@moa/protocol"
import { defineAgent, resolveArtifactPath, verb, type AgentDefinition, type HandlerContext, type HandlerResult, type SetupContext } from "@moa/runtime"
import { AdapterStore } from "./adapters.ts"
import { defaultBatching, Engine, type BatchingOptions } from "./engine.ts"
import { Trainer, TrainRequest, TrainResponse } from "./train.ts"
import { fetchVersion, followRegistry, storedVersions, uploadVersion, weightsBucket } from "./weights.ts"

export const EXPERT_VERSION = "0.1.0"

export interface ExpertOptions {
  readonly name: string
  /** Checkpoint folder (config.json, model.safetensors, tokenizer.json), relative to the working directory. */
  readonly model: string
  /** Adapters to register at start: name → PEFT adapter folder. */
  readonly adapters?: Record<string, string>
  /** Adapter used when a request names none (default: the base model). */
  readonly defaultAdapter?: string
  /** Most adapters held in memory at once (default 8); least recently used leave first. */
  readonly maxLoadedAdapters?: number
  /** Where trained adapter versions go (default `.moa/experts/<name>`). */
  readonly artifacts?: string
  /** Micro-batching: `false` turns it off; default { windowMs: 4, maxBatch: 16 }. */
  readonly batching?: Partial<BatchingOptions> | false
  /** Force a backend (else MOA_BACKEND, else the model's default order). */
  readonly backend?: BackendName
  readonly replicas?: number
  /** Requests in flight per process (default 64: they wait in the batcher, not the runtime). */
  readonly concurrency?: number
  readonly description?: string
  readonly env?: Record<string, string>
}

export interface ExpertState {
  readonly engine: Engine
  readonly store: AdapterStore
  readonly trainer: Trainer
  readonly info: () => ModelInfo
  /** the registry follower (agents only) */
  readonly follow?: { stop(): void }
}

/**
 * A path that arrives over NATS may only name a folder inside this expert's artifacts folder
 * (relative to it, or absolute but inside it); anything else is refused as BAD_REQUEST.
 */
const artifactPathFromMessage = (root: string, p: string): string => {
  try {
    return resolveArtifactPath(root, path.isAbsolute(p) ? path.relative(root, p) : p)
  } catch (e) {
    throw moaError("BAD_REQUEST", (e as Error).message, { field: "path" })
  }
}

const AdaptersLoadRequest = Schema.Struct({ name: Schema.String, path: Schema.optional(Schema.String), version: Schema.optional(Schema.String) })
const AdapterEntry = Schema.Struct({ name: Schema.String, current: Schema.String, versions: Schema.Array(Schema.String), loaded: Schema.Array(Schema.String) })
const AdaptersList = Schema.Struct({ adapters: Schema.Array(AdapterEntry), inMemory: Schema.Array(Schema.String), maxLoaded: Schema.Int, evictions: Schema.Int, loads: Schema.Int })
const AdaptersUnloadRequest = Schema.Struct({ name: Schema.String })
const AdaptersUnloadResponse = Schema.Struct({ name: Schema.String, unloaded: Schema.Array(Schema.String) })
const Empty = Schema.Struct({})

export const ModelInfo = Schema.Struct({
  agent: Schema.String,
  model: Schema.String,
  modelDir: Schema.String,
  config: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
  params: Schema.Int,
  fingerprint: Schema.String,
  tokenizer: Schema.Struct({ kind: Schema.String, vocabSize: Schema.Int }),
  backend: Schema.Struct({ name: Schema.String, reason: Schema.String, kernelFixes: Schema.Boolean, tfjsVersion: Schema.String }),
  batching: Schema.Struct({ windowMs: Schema.Number, maxBatch: Schema.Int }),
  stats: Schema.Struct({
    batches: Schema.Int,
    rows: Schema.Int,
    maxBatchSize: Schema.Int,
    lastBatchSize: Schema.Int,
    batchSizes: Schema.Record({ key: Schema.String, value: Schema.Int }),
    tokensGenerated: Schema.Int,
    timeouts: Schema.Int,
    queued: Schema.Int,
  }),
  adapters: AdaptersList,
  defaultAdapter: Schema.optional(Schema.String),
  training: Schema.Struct({ running: Schema.optional(Schema.String), jobsDone: Schema.Int }),
  versions: Schema.Struct({ expert: Schema.String, tfjs: Schema.String, node: Schema.String }),
  artifacts: Schema.String,
  pid: Schema.Int,
  host: Schema.String,
})
export type ModelInfo = typeof ModelInfo.Type

const resolveBatching = (b: ExpertOptions["batching"]): BatchingOptions => {
  if (b === false) return { windowMs: 0, maxBatch: 1 }
  const out = { ...defaultBatching, ...(b ?? {}) }
  if (!(Number.isFinite(out.windowMs) && out.windowMs >= 0)) throw new Error(`batching.windowMs must be a number ≥ 0, got ${out.windowMs}`)
  if (!(Number.isInteger(out.maxBatch) && out.maxBatch >= 1)) throw new Error(`batching.maxBatch must be an integer ≥ 1, got ${out.maxBatch}`)
  return out
}

/** Load the model and adapters; what `setup` of the expert agent does (usable without NATS too). */
export async function createExpert(o: ExpertOptions, ctx?: Pick<SetupContext, "setBackend" | "setMetadata" | "log" | "config">): Promise<ExpertState> {
  // the cluster file's options, overridable per process through MOA_AGENT_CONFIG (ctx.config)
  const cfg = { ...o, ...((ctx?.config ?? {}) as Partial<ExpertOptions>) }
  const batching = resolveBatching(cfg.batching)
  const backend = await initBackend(cfg.backend, { log: (m) => ctx?.log.debug(m) })
  const modelDir = path.resolve(cfg.model)
  const { model, tokenizer, metadata } = loadCheckpoint(modelDir)
  const modelName = metadata.name ?? path.basename(modelDir)
  const fingerprint = baseFingerprint(model)
  const artifacts = path.resolve(cfg.artifacts ?? path.join(".moa", "experts", cfg.name))
  let engine: Engine | undefined
  const store = new AdapterStore(model, fingerprint, artifacts, cfg.maxLoadedAdapters ?? 8, (a) => engine?.forget(a))
  engine = new Engine(model, tokenizer, modelName, batching, store)
  for (const [name, dir] of Object.entries(cfg.adapters ?? {})) {
    try {
      store.load({ name, path: dir })
    } catch (e) {
      throw new Error(`expert "${cfg.name}": adapter "${name}" from ${dir}: ${(e as Error).message}`)
    }
  }
  if (cfg.defaultAdapter !== undefined) store.resolve(cfg.defaultAdapter, "defaultAdapter")
  const trainer = new Trainer(engine, store, fingerprint, (msg, data) => ctx?.log.info(data ?? {}, msg))
  ctx?.setBackend(backend.name)
  ctx?.setMetadata("model", modelName)
  ctx?.setMetadata("params", String(model.numParams()))
  ctx?.setMetadata("adapters", store.list().map((a) => `${a.name}@${a.current}`).join(","))
  if (cfg.defaultAdapter) ctx?.setMetadata("adapter", cfg.defaultAdapter)
  const e = engine
  const info = (): ModelInfo => {
    const b = backendInfo() ?? backend
    return {
      agent: cfg.name,
      model: modelName,
      modelDir,
      config: { ...model.config },
      params: model.numParams(),
      fingerprint,
      tokenizer: { kind: tokenizer.kind, vocabSize: tokenizer.vocabSize },
      backend: { name: b.name, reason: b.reason, kernelFixes: b.kernelFixes, tfjsVersion: b.tfjsVersion },
      batching: { ...e.batching },
      stats: { ...e.stats, batchSizes: { ...e.stats.batchSizes } },
      adapters: adaptersList(store),
      ...(cfg.defaultAdapter ? { defaultAdapter: cfg.defaultAdapter } : {}),
      training: { ...(trainer.running ? { running: trainer.running } : {}), jobsDone: trainer.jobsDone },
      versions: { expert: EXPERT_VERSION, tfjs: b.tfjsVersion, node: process.version },
      artifacts,
      pid: process.pid,
      host: os.hostname(),
    }
  }
  return { engine, store, trainer, info }
}

const adaptersList = (store: AdapterStore) => ({ adapters: store.list(), inMemory: store.loadedKeys(), maxLoaded: store.maxLoaded, evictions: store.evictions, loads: store.loads })

/** What fetching weights needs of a handler's (or the setup's) context. */
type WeightsContext = Pick<HandlerContext<ExpertState>, "nc" | "cluster" | "agent" | "log"> & { readonly state: Pick<ExpertState, "store"> }

/**
 * Make sure `name@version` is on this expert's disk: when it is not, fetch it from the cluster's
 * Object Store (another replica or host trained it) into the artifacts folder and register it.
 * NOT_FOUND, naming what exists locally and in the bucket, when neither has it.
 */
async function ensureVersion(ctx: WeightsContext, name: string, version: string, field: string): Promise<void> {
  const store = ctx.state.store
  if (store.hasVersion(name, version)) return
  // concurrent requests for the same missing version share one fetch
  const key = `${store.artifacts}\u0000${name}@${version}`
  const running = fetching.get(key)
  if (running) return running
  const p = fetchOrRegister(ctx, name, version, field).finally(() => fetching.delete(key))
  fetching.set(key, p)
  return p
}
const fetching = new Map<string, Promise<void>>()

async function fetchOrRegister(ctx: WeightsContext, name: string, version: string, field: string): Promise<void> {
  const store = ctx.state.store
  // on this disk but not registered (the adapter was unloaded, e.g. rolled back to the base)
  const here = path.join(store.adaptersDir, name, version)
  if (/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(version) && !version.includes("..") && fs.existsSync(path.join(here, "adapter_config.json"))) {
    store.validate(here, field)
    store.addVersion(name, version, here, false)
    return
  }
  const dir = await fetchVersion(ctx.nc, ctx.cluster, ctx.agent, name, version, store.adaptersDir, (d) => store.validate(d, field))
  if (dir) {
    store.addVersion(name, version, dir, false)
    ctx.log.info({ adapter: name, version, dir }, "fetched an adapter version from the Object Store")
    return
  }
  const local = store.has(name) ? store.list().find((a) => a.name === name)!.versions : []
  const stored = await storedVersions(ctx.nc, ctx.cluster, ctx.agent, name).catch(() => [])
  throw moaError(
    "NOT_FOUND",
    `adapter "${name}" has no version "${version}" on this expert's disk (${local.join(", ") || "none"}) nor in ${weightsBucket(ctx.cluster)} under ${ctx.agent}/${name}/ (${stored.join(", ") || "none"})`,
    { field },
  )
}

/** `name@version` in a generate/score request: fetch the version first when it is not here. */
const ensureRef = async (ctx: HandlerContext<ExpertState>, ref: string | undefined): Promise<void> => {
  if (ref === undefined) return
  const at = ref.indexOf("@")
  if (at < 0) return
  const name = ref.slice(0, at)
  const version = ref.slice(at + 1)
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(name) || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(version) || ctx.state.store.hasVersion(name, version)) return
  await ensureVersion(ctx, name, version, "adapter")
}

/** A runtime agent definition serving a checkpoint (and its adapters) over NATS. */
export function defineExpert(o: ExpertOptions): AgentDefinition<ExpertState> {
  resolveBatching(o.batching) // fail early, in the cluster file
  const withDefault = <R extends { adapter?: string }>(req: R): R =>
    req.adapter === undefined && o.defaultAdapter !== undefined ? { ...req, adapter: o.defaultAdapter } : req
  return defineAgent<ExpertState>({
    name: o.name,
    role: "expert",
    replicas: o.replicas,
    concurrency: o.concurrency ?? 64,
    version: EXPERT_VERSION,
    description: o.description ?? `model-backed expert serving ${o.model}`,
    env: o.env,
    metadata: { modelDir: o.model },
    setup: async (ctx) => {
      const state = await createExpert(o, ctx)
      // every replica, on every host, serves the version the registry names (promotions and
      // rollbacks reach them all, and a replica started later picks up the current one)
      const wctx: WeightsContext = { nc: ctx.nc, cluster: ctx.cluster, agent: ctx.agent, log: ctx.log, state }
      const follow = followRegistry(ctx.nc, ctx.cluster, ctx.agent, async (e) => {
        const store = state.store
        if (e.current === "base") {
          if (store.has(e.adapter) && o.defaultAdapter !== e.adapter) store.unload(e.adapter)
          return
        }
        if (store.list().find((a) => a.name === e.adapter)?.current === e.current) return
        await ensureVersion(wctx, e.adapter, e.current, "version")
        store.load({ name: e.adapter, version: e.current })
        ctx.log.info({ adapter: e.adapter, version: e.current }, "serving the registry's version")
      }, (m, d) => ctx.log.debug(d ?? {}, m))
      return { ...state, follow }
    },
    teardown: (state) => {
      state.follow?.stop()
      state.engine.close()
    },
    handlers: {
      generate: (req: GenerateRequest, ctx): HandlerResult<GenerateResponse, GenerateChunk> => {
        const r = withDefault(req)
        const o = { deadline: ctx.deadline, signal: ctx.signal }
        const at = r.adapter?.indexOf("@") ?? -1
        if (at < 0 || ctx.state.store.hasVersion(r.adapter!.slice(0, at), r.adapter!.slice(at + 1)))
          return req.stream ? ctx.state.engine.stream(r, o) : ctx.state.engine.generate(r, o)
        // a version trained elsewhere: fetch it from the Object Store first
        if (req.stream)
          return (async function* () {
            await ensureRef(ctx, r.adapter)
            yield* ctx.state.engine.stream(r, o)
          })()
        const fetched = async (): Promise<GenerateResponse> => {
          await ensureRef(ctx, r.adapter)
          return ctx.state.engine.generate(r, o)
        }
        return fetched()
      },
      score: async (req: ScoreRequest, ctx) => {
        const r = withDefault(req)
        await ensureRef(ctx, r.adapter)
        return ctx.state.engine.score(r)
      },
      "model-info": verb({ request: Empty, response: ModelInfo, description: "model config, parameters, backend, adapters, batching stats" }, (_req, ctx) => ctx.state.info()),
      "adapters-list": verb({ request: Empty, response: AdaptersList, description: "adapters registered and in memory" }, (_req, ctx) => adaptersList(ctx.state.store)),
      "adapters-load": verb(
        { request: AdaptersLoadRequest, response: AdapterEntry, description: "register an adapter folder, or make a saved version current" },
        async (req, ctx) => {
          if (req.path !== undefined) return ctx.state.store.load({ ...req, path: artifactPathFromMessage(ctx.state.store.artifacts, req.path) })
          // a version this expert does not have (trained by another replica/host, or its disk is new): from the Object Store
          if (req.version !== undefined && /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(req.name)) await ensureVersion(ctx, req.name, req.version, "version")
          return ctx.state.store.load(req)
        },
      ),
      "adapters-unload": verb({ request: AdaptersUnloadRequest, response: AdaptersUnloadResponse, description: "forget an adapter" }, (req, ctx) => {
        if (o.defaultAdapter === req.name) throw moaError("BAD_REQUEST", `"${req.name}" is this expert's default adapter; it cannot be unloaded`, { field: "name" })
        return ctx.state.store.unload(req.name)
      }),
      train: verb({ request: TrainRequest, response: TrainResponse, description: "train a new adapter version (sft, dpo, ipo, simpo, orpo, kto, grpo, ppo)" }, async (req, ctx) => {
        // version ids other replicas already put in the Object Store are taken too
        const taken = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(req.adapter) ? await storedVersions(ctx.nc, ctx.cluster, ctx.agent, req.adapter).catch(() => []) : []
        const res = await ctx.state.trainer.run(req, { signal: ctx.signal, takenVersions: taken })
        try {
          return { ...res, objects: await uploadVersion(ctx.nc, ctx.cluster, ctx.agent, res.adapter, res.version, res.dir) }
        } catch (e) {
          // no JetStream on this server: the version stays on this disk only
          ctx.log.warn({ adapter: res.adapter, version: res.version, error: String(e) }, "could not put the new adapter version in the Object Store")
          return res
        }
      }),
    },
  })
}
