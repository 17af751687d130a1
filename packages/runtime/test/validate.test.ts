import { describe, expect, it } from "vitest"
import { ClusterFileError, clusterProblems, defineAgent, defineCluster, validateCluster } from "../src/index.ts"

const ok = () => defineAgent({ name: "a", role: "expert", handlers: { generate: () => ({ text: "", tokens: 0, finishReason: "stop" as const }) } })

describe("cluster validation", () => {
  it("accepts a good cluster and fills defaults", () => {
    const c = validateCluster(defineCluster({ name: "c", agents: [ok()] }), "c.ts")
    expect(c.agents[0]).toMatchObject({ replicas: 1, concurrency: 32 })
  })

  const cases: Array<[string, unknown, RegExp]> = [
    ["unknown role", { name: "c", agents: [{ ...ok(), role: "wizard" }] }, /unknown role "wizard"; use one of expert, router/],
    ["duplicate names", { name: "c", agents: [ok(), ok()] }, /duplicate agent name "a"/],
    ["missing handlers", { name: "c", agents: [{ ...ok(), handlers: {} }] }, /missing handlers/],
    ["a handler that is not a function", { name: "c", agents: [{ ...ok(), handlers: { generate: undefined } }] }, /missing handler for verb "generate"/],
    ["bad characters in an agent name", { name: "c", agents: [{ ...ok(), name: "my agent" }] }, /agent name "my agent" may only contain/],
    ["bad characters in the cluster name", { name: "c.1", agents: [ok()] }, /cluster name "c.1" may only contain/],
    ["replicas < 1", { name: "c", agents: [{ ...ok(), replicas: 0 }] }, /replicas must be an integer >= 1 \(got 0\)/],
    ["a built-in verb", { name: "c", agents: [{ ...ok(), handlers: { health: () => 1 } }] }, /verb "health" is built in/],
    ["no agents", { name: "c", agents: [] }, /has no agents/],
  ]
  for (const [what, def, msg] of cases) {
    it(`refuses ${what}, naming the file`, () => {
      expect(clusterProblems(def).join("\n")).toMatch(msg)
      expect(() => validateCluster(def, "bad.ts")).toThrow(ClusterFileError)
      expect(() => validateCluster(def, "bad.ts")).toThrow(/invalid cluster file bad\.ts/)
    })
  }
})
