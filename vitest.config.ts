import { defineConfig } from "vitest/config"

// One run for the whole monorepo: every test talks to real processes (nats-server, agents),
// so files run in forked workers, two at a time on this 2-core machine.
export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "agents/*/test/**/*.test.ts", "examples/*/test/**/*.test.ts"],
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ["default"],
  },
})
