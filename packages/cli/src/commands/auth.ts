/**
 * `moa auth init`: per-role NATS credentials (nkeys) with subject permissions, a TLS CA with
 * server and client certificates, and the nats-server config that enforces them.
 *
 *   moa auth init --cluster-file examples/quickstart/cluster.ts --out .moa/auth
 *   moa auth init --cluster skills --experts add,reverse --router router --coordinator coach
 *
 * The logic is in @moa/cluster-net (`authInit`); this file only parses flags.
 */
import { Command, Options } from "@effect/cli"
import { authInit, type AuthInitOptions } from "@moa/cluster-net"
import { loadClusterFile } from "@moa/runtime"
import { Effect, Option } from "effect"
import { resolve } from "node:path"
import { fail } from "../common.ts"

const csv = (o: Option.Option<string>): Array<string> | undefined =>
  Option.isSome(o) ? o.value.split(",").map((s) => s.trim()).filter(Boolean) : undefined

const text = (name: string, description: string) => Options.text(name).pipe(Options.withDescription(description), Options.optional)

const initCommand = Command.make(
  "init",
  {
    out: Options.text("out").pipe(Options.withDescription("folder to write credentials and configs to (must be empty)"), Options.withDefault(".moa/auth")),
    clusterFile: text("cluster-file", "take the cluster name and agents (by role) from this cluster file"),
    cluster: text("cluster", "cluster name (when no --cluster-file)"),
    experts: text("experts", "expert agent names, comma-separated"),
    router: text("router", "router agent name"),
    coordinator: text("coordinator", "coordinator agent name"),
    gateways: text("gateways", "gateway agent names, comma-separated"),
    consoles: text("consoles", "console/client credential names, comma-separated (default: console)"),
    sanDns: text("san-dns", "extra DNS names the nats-servers are reached by, comma-separated (e.g. nats-1,nats-2,nats-3)"),
    sanIp: text("san-ip", "extra IP addresses the nats-servers are reached by, comma-separated"),
    serverPath: text("server-path", "where the nats-server will see the --out folder (e.g. /etc/nats/moa in a container)"),
    clientPath: text("client-path", "where agents will see the --out folder (paths in env/<user>.env, e.g. /run/moa in a container)"),
    noTls: Options.boolean("no-tls").pipe(Options.withDescription("write credentials only, no certificates")),
    force: Options.boolean("force").pipe(Options.withDescription("write into a non-empty --out folder")),
  },
  (o) =>
    Effect.gen(function* () {
      let cluster = Option.getOrUndefined(o.cluster)
      let experts = csv(o.experts)
      let router = Option.getOrUndefined(o.router)
      let coordinator = Option.getOrUndefined(o.coordinator)
      let gateways = csv(o.gateways)
      if (Option.isSome(o.clusterFile)) {
        const file = o.clusterFile.value
        const def = yield* Effect.tryPromise({
          try: () => loadClusterFile(resolve(file)),
          catch: (e) => (e as Error).message,
        }).pipe(Effect.catchAll((m) => fail(`moa auth init: cannot load ${file}: ${m}`)))
        const byRole = (role: string) => def.agents.filter((a) => a.role === role).map((a) => a.name)
        cluster ??= def.name
        experts ??= [...byRole("expert"), ...byRole("custom")]
        router ??= byRole("router")[0]
        coordinator ??= byRole("coordinator")[0]
        gateways ??= byRole("gateway")
        if (byRole("router").length > 1) return yield* fail(`moa auth init: ${file} has several routers (${byRole("router").join(", ")}); name the one consoles may ask with --router`)
      }
      const fromFile = Option.isSome(o.clusterFile)
      const missing = [
        !cluster && "--cluster (or --cluster-file)",
        !experts?.length && (fromFile ? "--experts (the cluster file has no agent with role expert)" : "--experts"),
        !router && (fromFile ? "--router (the cluster file has no agent with role router)" : "--router"),
        !coordinator && (fromFile ? "--coordinator (the cluster file has no agent with role coordinator; name the credential that will write the registry)" : "--coordinator"),
      ].filter(Boolean)
      if (missing.length) return yield* fail(`moa auth init: missing ${missing.join(", ")}`)
      const opts: AuthInitOptions = {
        out: o.out,
        cluster: cluster!,
        experts: experts!,
        router: router!,
        coordinator: coordinator!,
        gateways,
        consoles: csv(o.consoles),
        dnsNames: csv(o.sanDns),
        ipAddresses: csv(o.sanIp),
        serverPath: Option.getOrUndefined(o.serverPath),
        clientPath: Option.getOrUndefined(o.clientPath),
        tls: !o.noTls,
        force: o.force,
      }
      const r = yield* Effect.try({ try: () => authInit(opts), catch: (e) => (e as Error).message }).pipe(Effect.catchAll((m) => fail(m)))
      const lines = [
        `wrote ${r.credentials.length} credentials for cluster ${cluster} to ${r.out}`,
        ...r.credentials.map((c) => `  ${c.user.padEnd(24)} ${c.kind.padEnd(11)} ${c.publicKey}`),
        `server: nats-server -c ${r.serverConf}   (includes auth.conf${r.tlsConf ? " and tls.conf" : ""})`,
        `agents: load env/<user>.env (MOA_NATS_NKEY_SEED_FILE, MOA_NATS_INBOX_PREFIX${r.tlsConf ? ", MOA_NATS_CA/CERT/KEY" : ""})`,
        "keep creds/ and tls/*-key.pem secret; each agent needs only its own files.",
      ]
      yield* Effect.sync(() => process.stdout.write(lines.join("\n") + "\n"))
    }),
).pipe(Command.withDescription("generate per-role NATS credentials, TLS certificates and the server config that enforces them"))

export const authCommand = Command.make("auth").pipe(
  Command.withDescription("credentials and TLS for clusters that span several hosts"),
  Command.withSubcommands([initCommand]),
)
