/**
 * Test helper shared by every package: a real nats-server per test file.
 *
 * ```ts
 * import { startNatsServer } from "@moa/bus/testing"
 * let nats: NatsServerHandle
 * beforeAll(async () => { nats = await startNatsServer({ jetstream: true }) })
 * afterAll(() => nats?.stop())
 * ```
 */
import { spawnNatsServer, type NatsServerHandle, type NatsServerOptions } from "./nats-server.ts"

export type { NatsServerHandle, NatsServerOptions } from "./nats-server.ts"
export { freePort, findNatsServerBinary } from "./nats-server.ts"

const running = new Set<NatsServerHandle>()
let hooked = false

/**
 * Start a real `nats-server` on a free 127.0.0.1 port (JetStream on by default, temp store).
 * Returns `{ url, port, stop, restart, pid, storeDir }`. Servers still running when the
 * process exits are killed.
 */
export const startNatsServer = async (opts: NatsServerOptions = {}): Promise<NatsServerHandle> => {
  const h = await spawnNatsServer(opts)
  running.add(h)
  if (!hooked) {
    hooked = true
    process.once("exit", () => {
      for (const s of running) {
        const pid = s.pid()
        if (pid) {
          try {
            process.kill(pid, "SIGKILL")
          } catch {
            // already gone
          }
        }
      }
    })
  }
  const stop = h.stop
  return {
    ...h,
    stop: async () => {
      running.delete(h)
      await stop()
    },
  }
}
