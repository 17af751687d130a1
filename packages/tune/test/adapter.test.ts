import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs"
import { GPT, makeConfig } from "@moa/model"
import { afterAll, describe, expect, it } from "vitest"
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, Adapter, AdapterError, baseFingerprint } from "../src/peft/adapter.ts"
import { decodeSafetensors } from "@moa/model"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "moa-tune-adapter-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const tiny = (seed = 1, dModel = 16) => new GPT(makeConfig({ vocabSize: 12, contextLength: 8, dModel, nLayers: 2, nHeads: 2 }), { seed })
const ids = tf.tensor2d([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], [2, 5], "int32")
const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!)
/** Give every adapter variable random values, as if trained. */
const perturb = (a: Adapter, seed: number) => a.variables().forEach((v, i) => v.assign(tf.add(v, tf.randomNormal(v.shape, 0, 0.2, "float32", seed + i))))

const refusal = (f: () => unknown): string => {
  try {
    f()
  } catch (e) {
    expect(e).toBeInstanceOf(AdapterError)
    return (e as Error).message
  }
  throw new Error("expected the adapter to be refused")
}

describe("adapters on the GPT", () => {
  for (const dora of [false, true]) {
    it(`${dora ? "DoRA" : "LoRA"}: merged forward equals the adapted forward; unmerge restores the base`, () => {
      const model = tiny()
      const base = model.forward(ids)
      const a = Adapter.create(model, { r: 4, alpha: 8, dora, targetModules: ["q", "k", "v", "o", "mlp_in", "mlp_out"], seed: 2 }, { name: "tiny" })
      a.attach(model)
      expect(maxAbsDiff(model.forward(ids), base)).toBeLessThan(1e-5) // B = 0: starts as the base
      perturb(a, 10)
      const adapted = model.forward(ids)
      expect(maxAbsDiff(adapted, base)).toBeGreaterThan(1e-3)
      a.merge(model)
      a.detach() // the merged weights alone must reproduce the adapter
      expect(maxAbsDiff(model.forward(ids), adapted)).toBeLessThan(1e-4)
      a.attach(model)
      a.unmerge(model)
      expect(maxAbsDiff(model.forward(ids), adapted)).toBeLessThan(1e-4)
      a.detach()
      expect(maxAbsDiff(model.forward(ids), base)).toBeLessThan(1e-4)
    })
  }

  it("saves in PEFT's layout and loads back to the same forward", () => {
    const model = tiny()
    const a = Adapter.create(model, { r: 2, alpha: 4, dora: true, rslora: true, targetModules: ["q", "v"], seed: 3 }, { name: "tiny-base" })
    perturb(a, 20)
    a.attach(model)
    const adapted = model.forward(ids)
    a.detach()
    const out = path.join(dir, "qv")
    const bytes = a.save(out)
    expect(fs.readdirSync(out).sort()).toEqual([ADAPTER_CONFIG, ADAPTER_WEIGHTS])
    expect(bytes).toBe(fs.statSync(path.join(out, ADAPTER_CONFIG)).size + fs.statSync(path.join(out, ADAPTER_WEIGHTS)).size)
    const cfg = JSON.parse(fs.readFileSync(path.join(out, ADAPTER_CONFIG), "utf8"))
    expect(cfg).toMatchObject({ peft_type: "LORA", r: 2, lora_alpha: 4, use_dora: true, use_rslora: true, lora_dropout: 0, base_model_name_or_path: "tiny-base" })
    expect(cfg.target_modules).toEqual(["h.0.attn.q_proj", "h.0.attn.v_proj", "h.1.attn.q_proj", "h.1.attn.v_proj"])
    expect(cfg.base_model_fingerprint).toBe(baseFingerprint(model))
    const { tensors } = decodeSafetensors(new Uint8Array(fs.readFileSync(path.join(out, ADAPTER_WEIGHTS))))
    expect(tensors.get("base_model.model.h.0.attn.q_proj.lora_A.weight")!.shape).toEqual([2, 16]) // [r, in]
    expect(tensors.get("base_model.model.h.0.attn.q_proj.lora_B.weight")!.shape).toEqual([16, 2]) // [out, r]
    expect(tensors.get("base_model.model.h.1.attn.v_proj.lora_magnitude_vector")!.shape).toEqual([16])
    expect(tensors.size).toBe(12)

    const b = Adapter.load(out, model)
    b.attach(model)
    expect(maxAbsDiff(model.forward(ids), adapted)).toBeLessThan(1e-5)
    b.dispose()
    a.dispose()
  })

  it("refuses an adapter for another base, with wrong shapes, or with target modules the model lacks", () => {
    const model = tiny(1)
    const a = Adapter.create(model, { r: 2, alpha: 4, targetModules: ["q"], seed: 4 }, { name: "base-1" })
    const out = path.join(dir, "q")
    a.save(out)
    expect(refusal(() => Adapter.load(out, tiny(2)))).toMatch(/trained on another base model \(base-1/)

    // a wider model that claims the same fingerprint still fails on the tensor shapes
    const claimed = JSON.parse(fs.readFileSync(path.join(out, ADAPTER_CONFIG), "utf8")).base_model_fingerprint
    expect(refusal(() => Adapter.load(out, tiny(1, 32), { fingerprint: claimed }))).toMatch(
      /lora_A\.weight" has shape \[2, 16\], but this model needs \[2, 32\]/,
    )

    const cfgPath = path.join(out, ADAPTER_CONFIG)
    const cfg = JSON.parse(fs.readFileSync(cfgPath, "utf8"))
    fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, target_modules: ["h.0.attn.q_proj", "h.0.self_attn.gate_proj"] }))
    expect(refusal(() => Adapter.load(out, model))).toMatch(/target module "h\.0\.self_attn\.gate_proj" not found in the model/)
    fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, peft_type: "PREFIX_TUNING" }))
    expect(refusal(() => Adapter.load(out, model))).toMatch(/only "LORA"/)
    fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, base_model_fingerprint: undefined }))
    expect(refusal(() => Adapter.load(out, model))).toMatch(/no base_model_fingerprint/)
    expect(Adapter.load(out, model, { allowUnknownBase: true }).layers.size).toBe(2)
    fs.writeFileSync(cfgPath, JSON.stringify(cfg))
    fs.writeFileSync(path.join(out, ADAPTER_WEIGHTS), fs.readFileSync(path.join(out, ADAPTER_WEIGHTS)).subarray(0, 100))
    expect(() => Adapter.load(out, model)).toThrow(/truncated or corrupt/)
    expect(refusal(() => Adapter.load(path.join(dir, "nothing-here"), model))).toMatch(/not an adapter folder/)
  })

  it("an interrupted save leaves the previous adapter intact", () => {
    const model = tiny()
    const a = Adapter.create(model, { r: 2, alpha: 4, targetModules: ["v"], seed: 5 }, { name: "b" })
    const out = path.join(dir, "atomic")
    a.save(out)
    const before = fs.readFileSync(path.join(out, ADAPTER_WEIGHTS))
    perturb(a, 30)
    // a save that fails half-way (the tensors cannot be read) must not touch the folder
    const broken = Object.create(a) as Adapter
    broken.config = () => {
      throw new Error("killed mid-save")
    }
    expect(() => broken.save(out)).toThrow(/killed mid-save/)
    expect(fs.readFileSync(path.join(out, ADAPTER_WEIGHTS))).toEqual(before)
    expect(fs.readdirSync(dir).filter((f) => f.includes(".tmp-"))).toEqual([])
    Adapter.load(out, model).dispose()
  })

  it("QLoRA-style: the frozen base held in int8/4-bit is smaller and nearly the same forward", () => {
    const model = tiny(1, 32)
    const base = model.forward(ids)
    for (const [bits, minRatio] of [[8, 3.5], [4, 6]] as const) {
      const a = Adapter.create(model, { r: 2, alpha: 4, targetModules: ["all"], seed: 6 }, { name: "q" })
      a.attach(model, { quantize: bits })
      const mem = a.quantizedMemory()!
      expect(mem.float32Bytes / mem.quantizedBytes).toBeGreaterThan(minRatio)
      const d = maxAbsDiff(model.forward(ids), base)
      expect(d).toBeLessThan(bits === 8 ? 0.01 : 0.1)
      const { grads } = tf.variableGrads(() => tf.mean(tf.square(model.forward(ids))) as tf.Scalar, a.variables())
      expect(Object.keys(grads).length).toBe(a.variables().length)
      a.dispose()
    }
  })

  it("QLoRA-style with releaseFloat32: the float32 base weights of the targets really leave memory, and come back on detach", () => {
    const model = tiny(1, 32)
    const base = model.forward(ids)
    const a = Adapter.create(model, { r: 2, alpha: 4, targetModules: ["all"], seed: 6 }, { name: "q" })
    expect(() => a.attach(model, { releaseFloat32: true })).toThrow(/releaseFloat32 needs quantize/)
    const shapes = new Map(a.options.targetModules.map((n) => [n, model.params.get(`${n}.weight`)!.shape]))
    const held = tf.memory().numBytes
    a.attach(model, { quantize: 8, releaseFloat32: true })
    const mem = a.quantizedMemory()!
    // every target's float32 weight is gone, a 1-float placeholder each stands in its place
    expect(held - tf.memory().numBytes).toBe(mem.float32Bytes - 4 * shapes.size)
    expect(tf.tidy(() => maxAbsDiff(model.forward(ids), base))).toBeLessThan(0.01)
    const attached = tf.memory().numBytes
    a.detach()
    expect(tf.memory().numBytes - attached).toBe(mem.float32Bytes - 4 * shapes.size)
    for (const [n, shape] of shapes) expect(model.params.get(`${n}.weight`)!.shape).toEqual(shape)
    expect(maxAbsDiff(model.forward(ids), base)).toBeLessThan(0.01)
    a.dispose()
  })
})
