// Numerical parity with PyTorch (bench/torch_gpt.py) through a safetensors checkpoint:
// logits and loss within 1e-4, gradients of one step within 1e-3 of the largest gradient.
import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { PARITY_CONFIGS, PYTHON, parity, torchAvailable } from "../bench/parity.js"
import * as native from "../src/native/index.js"

const hasTorch = torchAvailable()
if (!hasTorch) console.warn(`[parity.test] SKIPPED: ${PYTHON} cannot import torch (apt-get install python3-torch)`)

describe.skipIf(!hasTorch)("parity with PyTorch", () => {
  const backends = ["cpu", ...(native.available() ? ["native"] : [])]
  for (const backend of backends) {
    it(`same logits, loss and gradients on ${backend}`, async () => {
      if (backend === "native") await native.register()
      await tf.setBackend(backend)
      for (const c of PARITY_CONFIGS) {
        const r = await parity(c)
        expect(r.backend).toBe(backend)
        expect(r.maxLogitDiff, `${r.config} logits`).toBeLessThanOrEqual(1e-4)
        expect(r.lossDiff, `${r.config} loss`).toBeLessThanOrEqual(1e-4)
        expect(r.maxGradRel, `${r.config} worst gradient ${r.worstGrad}`).toBeLessThanOrEqual(1e-3)
        expect(r.gradCount).toBeGreaterThan(10)
      }
    }, 300_000)
  }
})
