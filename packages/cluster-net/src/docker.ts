/**
 * The nats-server configs of docker/compose.yaml's 3-node cluster, from the same renderer the
 * network-namespace tests use. `docker/nats/nats-{1,2,3}.conf` are this function's output with
 * the auth folder mounted at /etc/nats/auth; a test keeps them in sync. Regenerate with
 *   npx tsx packages/cluster-net/src/docker.ts
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { renderClusterConfigs } from "./nats-config.ts"

export const DOCKER_NATS_NODES = ["nats-1", "nats-2", "nats-3"] as const

/** Config text per file name; `authDir` is where `moa auth init --out docker/auth` is mounted. */
export const renderDockerNatsConfigs = (
  authDir = "/etc/nats/auth",
  storeDir: (node: string) => string = () => "/data/jetstream",
): Array<{ readonly file: string; readonly text: string }> =>
  renderClusterConfigs({
    clusterName: "moa",
    nodes: DOCKER_NATS_NODES.map((name) => ({ name, address: name, listen: "0.0.0.0" })),
    storeDir: (n) => storeDir(n.name),
    httpPort: 8222,
    routeTls: { certFile: `${authDir}/tls/server.pem`, keyFile: `${authDir}/tls/server-key.pem`, caFile: `${authDir}/tls/ca.pem`, verify: true },
    // auth.conf: accounts and per-role permissions; tls.conf: mutual TLS on the client port
    includes: ["auth/auth.conf", "auth/tls.conf"],
    pingIntervalSeconds: 10,
    pingMax: 3,
    writeDeadlineSeconds: 5,
  }).map(({ node, config }) => ({ file: `${node.name}.conf`, text: config }))

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = fileURLToPath(new URL("../../../docker/nats/", import.meta.url))
  for (const { file, text } of renderDockerNatsConfigs()) writeFileSync(join(dir, file), text)
  console.log(`wrote ${DOCKER_NATS_NODES.length} configs to ${dir}`)
}
