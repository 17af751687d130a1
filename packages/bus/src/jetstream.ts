/**
 * Access to JetStream, Key-Value and Object Store for the issues that build on the bus
 * (train jobs, the adapter registry, checkpoints). Only nats-server 2.9 features: no stream
 * compression, metadata, `filter_subjects`, per-message TTL or consumer pause.
 */
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream"
import { Kvm, type KV, type KvOptions } from "@nats-io/kv"
import { Objm, type ObjectStore, type ObjectStoreOptions } from "@nats-io/obj"
import { Effect } from "effect"
import { toMoaError, unavailable, type MoaError } from "@moa/protocol"
import { Nats } from "./connection.ts"

export type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream"
export type { KV, KvEntry, KvOptions } from "@nats-io/kv"
export type { ObjectStore, ObjectStoreOptions, ObjectInfo } from "@nats-io/obj"

const jsHint = (e: unknown): MoaError => {
  const m = toMoaError(e)
  return /jetstream not enabled|jetstream is not enabled|503/i.test(m.message)
    ? unavailable(`${m.message} (is nats-server running with -js? A publish to a subject no stream covers also reports this.)`)
    : m
}

/** The JetStream client of the current connection. */
export const jetStreamClient: Effect.Effect<JetStreamClient, never, Nats> = Effect.map(Nats, ({ nc }) => jetstream(nc))

/** The JetStream manager (streams, consumers). Fails with UNAVAILABLE when JetStream is off. */
export const jetStreamManager: Effect.Effect<JetStreamManager, MoaError, Nats> = Effect.flatMap(Nats, ({ nc }) =>
  Effect.tryPromise({ try: () => jetstreamManager(nc), catch: jsHint }),
)

/** Create or open a KV bucket. */
export const kvBucket = (name: string, opts?: Partial<KvOptions>): Effect.Effect<KV, MoaError, Nats> =>
  Effect.flatMap(Nats, ({ nc }) => Effect.tryPromise({ try: () => new Kvm(nc).create(name, opts), catch: jsHint }))

/** Create or open an Object Store bucket. */
export const objectStore = (name: string, opts?: Partial<ObjectStoreOptions>): Effect.Effect<ObjectStore, MoaError, Nats> =>
  Effect.flatMap(Nats, ({ nc }) => Effect.tryPromise({ try: () => new Objm(nc).create(name, opts), catch: jsHint }))
