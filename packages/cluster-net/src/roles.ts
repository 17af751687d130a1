/**
 * Who may do what on a moa NATS deployment. Each agent gets its own credential; its role
 * decides which subjects it may publish to and subscribe to. The permissions are plain
 * nats-server 2.9 user permissions (allow/deny lists, `allow_responses`), rendered into the
 * server config by `./nats-config.ts`.
 *
 * Roles:
 * - expert:      serves only `moa.<c>.<self>.>`; replies through `allow_responses` (it cannot
 *                publish to anybody's inbox otherwise); publishes events; pulls only its own
 *                training jobs; reads the registry KV; reads and writes artifact objects.
 *                It can NOT publish training jobs, touch other agents' subjects or write the
 *                registry.
 * - router:      everything an expert may, plus calling any agent of the cluster except the
 *                `train` verb and the jobs subjects, plus `$SRV` discovery.
 * - coordinator: calls any agent, publishes training jobs, manages the cluster's streams, writes
 *                the registry KV and the artifacts Object Store.
 * - gateway:     an agent that is an entry point (HTTP, chat): serves its own subjects and may
 *                ask the router, nothing else.
 * - console:     may only ask the router (and run read-only `$SRV` discovery), reads events.
 * - admin:       everything (operators, `moa up` creating streams/buckets); keep it off agents.
 */
import { checkName } from "@moa/protocol"

export type RoleKind = "expert" | "router" | "coordinator" | "gateway" | "console" | "admin"

export interface Permissions {
  readonly publish: { readonly allow: ReadonlyArray<string>; readonly deny?: ReadonlyArray<string> }
  readonly subscribe: { readonly allow: ReadonlyArray<string>; readonly deny?: ReadonlyArray<string> }
  /** Publishing to reply subjects of received requests (nats-server `allow_responses`). */
  readonly allowResponses?: { readonly max: number; readonly expires: string }
}

/** Names of the JetStream resources a cluster uses. */
export interface ClusterResources {
  /** Stream holding training jobs, subjects `moa.<cluster>.jobs.<agent>`. */
  readonly jobsStream: string
  /** Stream holding round events, subjects `moa.<cluster>.events.>`. */
  readonly eventsStream: string
  /** KV bucket of the adapter/router registry. */
  readonly registryBucket: string
  /** Object Store bucket for checkpoints and adapters. */
  readonly artifactsBucket: string
  /** The coordinator's round-events stream, subjects `moa.<cluster>.rounds.>`. */
  readonly roundsStream: string
  /** KV bucket of the adapter registry (expert → current version + history): the coordinator writes it, every expert replica watches its key. */
  readonly adaptersBucket: string
  /** Object Store bucket of adapter weights: an expert puts the versions it trains, any expert fetches the versions it lacks. */
  readonly weightsBucket: string
  /** The console's feedback stream (ratings, better answers), read by the coordinator. */
  readonly feedbackStream: string
}

/**
 * Names used by the rest of moa: the router's gate store (`moa_<cluster>_registry` / `_artifacts`),
 * the coordinator's jobs, round events, adapter registry and weights (packages/coordinator
 * store.ts, packages/expert weights.ts) and the console's feedback stream.
 */
export const defaultResources = (cluster: string): ClusterResources => ({
  jobsStream: `MOA_JOBS_${cluster}`,
  eventsStream: `moa-${cluster}-events`,
  registryBucket: `moa_${cluster}_registry`,
  artifactsBucket: `moa_${cluster}_artifacts`,
  roundsStream: `MOA_ROUNDS_${cluster}`,
  adaptersBucket: `moa_adapters_${cluster}`,
  weightsBucket: `moa_weights_${cluster}`,
  feedbackStream: `MOA_FEEDBACK_${cluster}`,
})

/** Subject a training job for `agent` is published on (captured by the jobs stream). */
export const jobSubject = (cluster: string, agent: string): string => `moa.${cluster}.jobs.${agent}`

/** The inbox prefix a role's connection must use (`inboxPrefix` connection option). */
export const inboxPrefixFor = (user: string): string => `_INBOX_${user}`

export interface RoleSpec {
  readonly kind: RoleKind
  /** Agent name (expert/router/coordinator) or a free name for console/admin credentials. */
  readonly name: string
}

export interface ClusterSecuritySpec {
  readonly cluster: string
  readonly experts: ReadonlyArray<string>
  readonly router: string
  readonly coordinator: string
  /** Gateway agents (entry points that serve their own subjects and ask the router). */
  readonly gateways?: ReadonlyArray<string>
  /** Console/client credentials (default: one called "console"). */
  readonly consoles?: ReadonlyArray<string>
  /** Admin credentials (default: one called "admin"). */
  readonly admins?: ReadonlyArray<string>
  readonly resources?: Partial<ClusterResources>
  /**
   * NATS service names an agent may register as (`$SRV.*.<service>`), `{cluster}` and `{agent}`
   * replaced; default: the agent name (runtime agents) and `moa-{cluster}-{agent}` (the router's
   * own service).
   */
  readonly serviceNames?: ReadonlyArray<string>
}

/** User name of a credential: `<kind>-<name>` (shown in server logs and client names). */
export const userName = (r: RoleSpec): string => (r.kind === r.name ? r.kind : `${r.kind}-${r.name}`)

const jsRead = (stream: string): Array<string> => [
  `$JS.API.STREAM.INFO.${stream}`,
  `$JS.API.STREAM.MSG.GET.${stream}`,
  `$JS.API.DIRECT.GET.${stream}`,
  `$JS.API.DIRECT.GET.${stream}.>`,
  `$JS.API.CONSUMER.CREATE.${stream}`,
  `$JS.API.CONSUMER.CREATE.${stream}.>`,
  `$JS.API.CONSUMER.INFO.${stream}.>`,
  `$JS.API.CONSUMER.DELETE.${stream}.>`,
  `$JS.API.CONSUMER.MSG.NEXT.${stream}.>`,
]

const jsManage = (stream: string): Array<string> => [
  `$JS.API.STREAM.*.${stream}`,
  `$JS.API.STREAM.MSG.*.${stream}`,
  `$JS.API.DIRECT.GET.${stream}`,
  `$JS.API.DIRECT.GET.${stream}.>`,
  `$JS.API.CONSUMER.*.${stream}`,
  `$JS.API.CONSUMER.*.${stream}.>`,
  `$JS.API.CONSUMER.MSG.NEXT.${stream}.>`,
  `$JS.API.CONSUMER.DURABLE.CREATE.${stream}.>`,
]

const serviceSubs = (svcs: ReadonlyArray<string>): Array<string> => [
  "$SRV.PING",
  "$SRV.INFO",
  "$SRV.STATS",
  ...svcs.flatMap((svc) => [`$SRV.*.${svc}`, `$SRV.*.${svc}.*`]),
]

const RESPONSES = { max: 100_000, expires: "15m" } as const

/** Validate a spec and fill defaults; throws with a sentence saying what to fix. */
export const normalizeSpec = (spec: ClusterSecuritySpec) => {
  const problems: Array<string> = []
  const check = (v: unknown, what: string) => {
    const p = checkName(v, what)
    if (p) problems.push(p)
  }
  check(spec.cluster, "cluster name")
  if (!Array.isArray(spec.experts) || spec.experts.length === 0) problems.push("at least one expert name is needed (--experts a,b,c)")
  for (const e of spec.experts ?? []) check(e, "expert name")
  check(spec.router, "router name")
  check(spec.coordinator, "coordinator name")
  const consoles = spec.consoles ?? ["console"]
  const admins = spec.admins ?? ["admin"]
  const gateways = spec.gateways ?? []
  for (const g of gateways) check(g, "gateway name")
  for (const c of consoles) check(c, "console credential name")
  for (const a of admins) check(a, "admin credential name")
  const agents = [...(spec.experts ?? []), spec.router, spec.coordinator, ...gateways]
  const dup = agents.find((a, i) => agents.indexOf(a) !== i)
  if (dup) problems.push(`agent name ${JSON.stringify(dup)} is used twice; every agent needs its own name`)
  for (const a of agents) if (a === "events" || a === "jobs") problems.push(`agent name ${JSON.stringify(a)} is reserved (moa.<cluster>.${a}.> is not an agent's subject space)`)
  if (problems.length > 0) throw new Error(`moa auth: invalid cluster security spec: ${problems.join("; ")}`)
  const resources = { ...defaultResources(spec.cluster), ...spec.resources }
  const roles: Array<RoleSpec> = [
    ...spec.experts.map((name) => ({ kind: "expert" as const, name })),
    { kind: "router", name: spec.router },
    { kind: "coordinator", name: spec.coordinator },
    ...gateways.map((name) => ({ kind: "gateway" as const, name })),
    ...consoles.map((name) => ({ kind: "console" as const, name })),
    ...admins.map((name) => ({ kind: "admin" as const, name })),
  ]
  return { ...spec, consoles, admins, gateways, resources, roles, serviceNames: spec.serviceNames ?? ["{agent}", "moa-{cluster}-{agent}"] }
}

export type NormalizedSpec = ReturnType<typeof normalizeSpec>

/** The subject permissions of one role in a cluster. */
export const permissionsFor = (spec: NormalizedSpec, role: RoleSpec): Permissions | undefined => {
  const c = spec.cluster
  const r = spec.resources
  const kv = `KV_${r.registryBucket}`
  const obj = `OBJ_${r.artifactsBucket}`
  const adapters = `KV_${r.adaptersBucket}`
  const weights = `OBJ_${r.weightsBucket}`
  const inbox = `${inboxPrefixFor(userName(role))}.>`
  const svc = spec.serviceNames.map((n) => n.replaceAll("{cluster}", c).replaceAll("{agent}", role.name))
  const events = `moa.${c}.events.>`
  // What every agent process needs: events, registry reads, artifact objects, $SRV for itself;
  // adapter registry reads (experts follow it) and adapter weights (experts put and fetch them).
  const agentBase = {
    pub: [
      events,
      "$JS.API.INFO",
      ...jsRead(kv),
      ...jsRead(obj),
      `$O.${r.artifactsBucket}.>`,
      `$JS.API.STREAM.PURGE.${obj}`,
      ...jsRead(adapters),
      ...jsRead(weights),
      `$O.${r.weightsBucket}.>`,
      `$JS.API.STREAM.PURGE.${weights}`,
    ],
    sub: [`moa.${c}.${role.name}.>`, inbox, ...serviceSubs(svc)],
  }
  switch (role.kind) {
    case "admin":
      return undefined // unrestricted
    case "expert": {
      const consumer = role.name
      return {
        publish: {
          allow: [
            ...agentBase.pub,
            // its own training-job consumer only (created by the coordinator or by itself)
            `$JS.API.STREAM.INFO.${r.jobsStream}`,
            `$JS.API.CONSUMER.INFO.${r.jobsStream}.${consumer}`,
            `$JS.API.CONSUMER.MSG.NEXT.${r.jobsStream}.${consumer}`,
            `$JS.API.CONSUMER.CREATE.${r.jobsStream}.${consumer}.${jobSubject(c, role.name)}`,
            `$JS.API.CONSUMER.DURABLE.CREATE.${r.jobsStream}.${consumer}`,
          ],
        },
        subscribe: { allow: agentBase.sub },
        allowResponses: RESPONSES,
      }
    }
    case "router":
      return {
        publish: {
          allow: [...agentBase.pub, `moa.${c}.>`, "$SRV.>"],
          deny: [`moa.${c}.jobs.>`, `moa.${c}.*.train`],
        },
        subscribe: { allow: agentBase.sub },
        allowResponses: RESPONSES,
      }
    case "coordinator":
      return {
        publish: {
          allow: [
            ...agentBase.pub,
            `moa.${c}.>`,
            "$SRV.>",
            `$KV.${r.registryBucket}.>`,
            `$KV.${r.adaptersBucket}.>`,
            "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.LIST",
            ...jsManage(r.jobsStream),
            ...jsManage(r.eventsStream),
            ...jsManage(r.roundsStream),
            ...jsManage(kv),
            ...jsManage(obj),
            ...jsManage(adapters),
            ...jsManage(weights),
            ...jsManage(r.feedbackStream), // created here so the console may write it
          ],
        },
        subscribe: { allow: [...agentBase.sub, events] },
        allowResponses: RESPONSES,
      }
    case "gateway":
      return {
        publish: { allow: [events, `moa.${c}.${spec.router}.>`, "$SRV.PING", "$SRV.INFO", "$SRV.STATS", "$SRV.*.*", "$SRV.*.*.*"] },
        subscribe: { allow: agentBase.sub },
        allowResponses: RESPONSES,
      }
    case "console":
      return {
        publish: {
          allow: [
            `moa.${c}.${spec.router}.>`,
            "$SRV.PING",
            "$SRV.INFO",
            "$SRV.STATS",
            "$SRV.*.*",
            "$SRV.*.*.*",
            // ratings and better answers into the feedback stream (the coordinator creates it)
            `moa.${c}.feedback.>`,
            "$JS.API.INFO",
            `$JS.API.STREAM.INFO.${r.feedbackStream}`,
          ],
        },
        subscribe: { allow: [inbox, events] },
      }
  }
}
