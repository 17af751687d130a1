// Not run in CI yet: hangs in the job drain (see docs/coordinator.md, Known problems). Paste into
// test/rounds.test.ts's describe block to run it.
  it("records bad jobs, a throwing reward function and an expert that disappears, and goes on for the others", async () => {
    const store = await Store.open(nc, CLUSTER)
    // queued before the round: a message that fails the schema, a job for an unknown expert, a job for an unknown version
    await store.enqueueRaw("sort", "{not json")
    await store.enqueueRaw("sort", JSON.stringify({ jobId: 7, run: "faults" }))
    const job = (expert: string, baseVersion: string) => ({ jobId: `faults.99.${expert}`, run: "faults", round: 99, expert, adapter: "sort", baseVersion, algorithm: "dpo", data: [{ prompt: "sort ba=", chosen: "ab", rejected: "ba" }], hyper: {} })
    await store.enqueueJob("ghost", job("ghost", "current"), "faults.99.ghost")
    await store.enqueueJob("sort", job("sort", "v99"), "faults.99.sort")
    const c = await Coordinator.open(nc, {
      cluster: CLUSTER,
      run: "faults",
      algo: "dpo",
      rounds: 1,
      experts: [
        { name: "sort", tasks: skillTasks("sort") },
        { name: "sort2", tasks: skillTasks("sort") },
        { name: "nosuch", tasks: skillTasks("sort") },
      ],
      prompts: 4,
      k: 3,
      heldOut: 8,
      hyper: { maxSteps: 2 },
      rewardSources: [
        {
          name: "flaky",
          fn: (t) => {
            if (t.question.length % 2 === 0) throw new Error("judge unavailable for this question")
            return undefined
          },
        },
      ],
      // the second expert disappears once its job is queued (before it trains)
      onEvent: (e) => {
        if (e.expert === "sort2" && e.step === "job-queued") sort2!.proc.kill("SIGKILL")
      },
    })
    const state = await c.run()
    const ev = (expert: string, step: string, round = 1) => state.log.find((e) => e.expert === expert && e.step === step && e.round === round)
    const invalid = state.log.filter((e) => e.step === "job-invalid").map((e) => String(e.data.reason))
    expect(invalid).toHaveLength(2)
    expect(invalid.every((r) => /fails its schema/.test(r))).toBe(true)
    expect(String(ev("ghost", "job-failed", 99)?.data.reason)).toMatch(/not running \(no responders\)/)
    expect(String(ev("sort", "job-failed", 99)?.data.reason)).toMatch(/NOT_FOUND.*v99/)
    expect(String(ev("nosuch", "skipped")?.data.reason)).toMatch(/no responders/)
    expect(String(ev("sort2", "job-failed")?.data.reason)).toMatch(/no responders|not running|TIMEOUT|closed/i)
    const rewardErrors = ev("sort", "reward-errors")!.data as { count: number; reasons: string[] }
    expect(rewardErrors.count).toBeGreaterThan(0)
    expect(rewardErrors.reasons[0]).toMatch(/flaky: judge unavailable/)
    // the round went on for sort: trained, evaluated, decided
    expect(ev("sort", "trained")).toBeDefined()
    expect(ev("sort", "decided")).toBeDefined()
    expect(ev("_", "round-done")).toBeDefined()
  }, 480_000)
