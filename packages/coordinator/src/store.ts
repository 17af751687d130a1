/**
 * The coordinator's durable state on NATS (nats-server 2.9 features only):
 * - round events: stream `MOA_ROUNDS_<cluster>` on `moa.<cluster>.rounds.>`, one message per
 *   step, message id = the step's key (JetStream de-duplicates a re-sent step);
 * - training jobs: work-queue stream `MOA_JOBS_<cluster>` on `moa.<cluster>.jobs.<expert>`;
 * - adapter registry: KV bucket `moa_adapters_<cluster>` (expert → current version + history);
 * - adapter weights: Object Store bucket `moa_weights_<cluster>`.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { NatsConnection } from "@nats-io/nats-core"
import { AckPolicy, DeliverPolicy, RetentionPolicy, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream"
import { Kvm, type KV } from "@nats-io/kv"
import { Objm, type ObjectStore } from "@nats-io/obj"
import { registryBucket, weightsBucket } from "@moa/expert"
import { eventKey, type RoundEvent } from "./logic.ts"

export interface RegistryEntry {
  readonly expert: string
  readonly adapter: string
  /** the version the expert serves as `adapter` ("base" = no adapter) */
  readonly current: string
  readonly history: ReadonlyArray<{ version: string; run?: string; round?: number; accuracy?: number; action: "registered" | "promoted" | "rollback"; at: string; objects?: string[] }>
}

const safe = (s: string) => {
  if (!/^[A-Za-z0-9_-]+$/.test(s)) throw new Error(`"${s}" cannot name a NATS stream/bucket: use letters, digits, - and _ only`)
  return s
}

export class Store {
  private constructor(
    readonly nc: NatsConnection,
    readonly cluster: string,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    readonly kv: KV,
    readonly obj: ObjectStore,
  ) {}

  get eventsStream() {
    return `MOA_ROUNDS_${this.cluster}`
  }
  get jobsStream() {
    return `MOA_JOBS_${this.cluster}`
  }
  eventSubject(e: Pick<RoundEvent, "run" | "round" | "expert" | "step" | "id">) {
    return `moa.${this.cluster}.rounds.${e.run}.${e.round}.${e.expert}.${e.step}`
  }
  jobSubject(expert: string) {
    return `moa.${this.cluster}.jobs.${expert}`
  }

  /** Open (creating when missing) the streams and buckets of `cluster`. */
  static async open(nc: NatsConnection, cluster: string): Promise<Store> {
    safe(cluster)
    const jsm = await jetstreamManager(nc).catch((e) => {
      throw new Error(`JetStream is not available on ${nc.getServer()} (${e.message}): start nats-server with -js`)
    })
    const ensure = async (name: string, cfg: Record<string, unknown>) => {
      try {
        await jsm.streams.info(name)
      } catch {
        await jsm.streams.add({ name, ...cfg } as any)
      }
    }
    await ensure(`MOA_ROUNDS_${cluster}`, { subjects: [`moa.${cluster}.rounds.>`], duplicate_window: 10 * 60 * 1e9 })
    await ensure(`MOA_JOBS_${cluster}`, { subjects: [`moa.${cluster}.jobs.>`], retention: RetentionPolicy.Workqueue, duplicate_window: 10 * 60 * 1e9 })
    // the console's ratings and better answers (its credential may publish there but not create streams)
    await ensure(`MOA_FEEDBACK_${cluster}`, { subjects: [`moa.${cluster}.feedback.>`] })
    const kv = await new Kvm(nc).create(registryBucket(cluster), { history: 10 })
    const obj = await new Objm(nc).create(weightsBucket(cluster))
    return new Store(nc, cluster, jetstream(nc), jsm, kv, obj)
  }

  /** Record an event once (its key is the message id; a re-sent step is dropped as a duplicate). */
  async record(e: RoundEvent): Promise<void> {
    await this.js.publish(this.eventSubject(e), JSON.stringify(e), { msgID: eventKey(e) })
  }

  /** Every recorded event of a run (or of every run), in stream order. */
  async events(run?: string): Promise<RoundEvent[]> {
    const filter = run ? `moa.${this.cluster}.rounds.${run}.>` : `moa.${this.cluster}.rounds.>`
    const info = await this.jsm.streams.info(this.eventsStream)
    if (info.state.messages === 0) return []
    // an ephemeral pull consumer with one filter_subject (filter_subjects needs nats-server 2.10)
    const ci = await this.jsm.consumers.add(this.eventsStream, {
      filter_subject: filter,
      deliver_policy: DeliverPolicy.All,
      ack_policy: AckPolicy.None,
      inactive_threshold: 60 * 1e9,
    })
    const c = await this.js.consumers.get(this.eventsStream, ci.name)
    const out: RoundEvent[] = []
    while (true) {
      // info(false): fresh from the server — `info(true)` is the client's cached copy, whose
      // num_pending never moves, so a second pass looped forever (the parked resume-test hang)
      const pending = (await c.info(false)).num_pending
      if (pending === 0) break
      try {
        const batch = await c.fetch({ max_messages: Math.min(pending, 500), expires: 5000 })
        for await (const m of batch) out.push(JSON.parse(m.string()) as RoundEvent)
      } catch (e) {
        // missed idle heartbeats on a busy machine: the ephemeral consumer keeps its place, pull again
        if (!/heartbeat/i.test(String((e as Error)?.message))) throw e
      }
    }
    await c.delete().catch(() => undefined)
    return out
  }

  // ---- jobs ---------------------------------------------------------------------------------

  async enqueueJob(expert: string, job: unknown, msgId: string): Promise<void> {
    await this.js.publish(this.jobSubject(expert), JSON.stringify(job), { msgID: msgId })
  }

  /** Publish raw bytes as a job (tests: a message that fails the schema). */
  async enqueueRaw(expert: string, bytes: Uint8Array | string): Promise<void> {
    await this.js.publish(this.jobSubject(expert), bytes)
  }

  /**
   * The durable consumer the coordinator works the queue with. Re-created at start so a job a
   * killed coordinator had taken but not acknowledged is handed out again at once.
   */
  async jobConsumer() {
    const name = "coordinator"
    await this.jsm.consumers.delete(this.jobsStream, name).catch(() => undefined)
    await this.jsm.consumers.add(this.jobsStream, { durable_name: name, ack_policy: AckPolicy.Explicit, ack_wait: 15 * 60 * 1e9, max_deliver: 20 })
    return this.js.consumers.get(this.jobsStream, name)
  }

  // ---- registry -----------------------------------------------------------------------------

  async registry(expert: string): Promise<RegistryEntry | undefined> {
    const e = await this.kv.get(safe(expert))
    return e && e.operation === "PUT" && e.length > 0 ? (e.json() as RegistryEntry) : undefined
  }
  async registryAll(): Promise<RegistryEntry[]> {
    const out: RegistryEntry[] = []
    for await (const k of await this.kv.keys()) {
      const r = await this.registry(k)
      if (r) out.push(r)
    }
    return out
  }
  async putRegistry(r: RegistryEntry): Promise<void> {
    await this.kv.put(safe(r.expert), JSON.stringify(r))
  }

  /** Upload an adapter version's PEFT folder (when this machine can read it) to the Object Store. */
  async uploadAdapter(expert: string, adapter: string, version: string, dir: string): Promise<string[]> {
    if (!fs.existsSync(dir)) return []
    const names: string[] = []
    for (const f of fs.readdirSync(dir)) {
      const p = path.join(dir, f)
      if (!fs.statSync(p).isFile()) continue
      const name = `${expert}/${adapter}/${version}/${f}`
      const data = new Uint8Array(fs.readFileSync(p))
      await this.obj.putBlob({ name }, data)
      names.push(name)
    }
    return names
  }
}
