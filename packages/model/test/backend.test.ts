import * as tf from "@tensorflow/tfjs"
import { afterEach, describe, expect, it } from "vitest"
import { initBackend } from "../src/backend.js"

afterEach(() => {
  delete process.env.MOA_BACKEND
})

describe("initBackend", () => {
  it("by default takes the first available of tensorflow → native → wasm → cpu and says why", async () => {
    const info = await initBackend()
    expect(["tensorflow", "native", "wasm", "cpu"]).toContain(info.name)
    expect(tf.getBackend()).toBe(info.name)
    expect(info.tfjsVersion).toBe("4.22.0")
    // tfjs-node is not installed here: the reason says it was skipped
    expect(info.reason).toMatch(/skipped tensorflow: @tensorflow\/tfjs-node-gpu not importable/)
  })

  it("MOA_BACKEND and an explicit name override the order", async () => {
    process.env.MOA_BACKEND = "cpu"
    const cpu = await initBackend()
    expect(cpu).toMatchObject({ name: "cpu", kernelFixes: false })
    expect(cpu.reason).toMatch(/MOA_BACKEND/)
    const wasm = await initBackend("wasm")
    expect(wasm).toMatchObject({ name: "wasm", kernelFixes: true })
    expect(tf.getBackend()).toBe("wasm")
  })

  it("an unavailable or unknown backend is a clear error", async () => {
    await expect(initBackend("tensorflow")).rejects.toThrow(/backend tensorflow is not available: tensorflow: @tensorflow\/tfjs-node-gpu not importable/)
    process.env.MOA_BACKEND = "gpu"
    await expect(initBackend()).rejects.toThrow(/MOA_BACKEND="gpu" is not a backend; use one of tensorflow, native, wasm, cpu/)
  })
})
