/**
 * A LoRA/DoRA adapter over a whole model, saved and loaded in Hugging Face PEFT's layout:
 *
 *   <dir>/adapter_config.json        peft_type "LORA", r, lora_alpha, lora_dropout, target_modules,
 *                                    use_dora, use_rslora, base_model_name_or_path, base_model_fingerprint
 *   <dir>/adapter_model.safetensors  base_model.model.<module>.lora_A.weight [r, in]
 *                                    base_model.model.<module>.lora_B.weight [out, r]
 *                                    base_model.model.<module>.lora_magnitude_vector [out]   (DoRA)
 *
 * Saves are atomic (a temporary folder, then rename), so an interrupted run never leaves a
 * half-written adapter where a server would load one.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs"
import { type HookableModel, type LinearOverride, selectTargets } from "./hook.ts"
import { LoraLayer } from "./lora.ts"
import { QuantizedLinear, type QuantBits, type QuantizedMatrix, dequantize, quantize, quantizedBytes } from "./quant.ts"
import { type STTensor, decodeSafetensors, encodeSafetensors, writeFolderAtomic } from "@moa/model"

export const ADAPTER_CONFIG = "adapter_config.json"
export const ADAPTER_WEIGHTS = "adapter_model.safetensors"
const PREFIX = "base_model.model."

export interface AdapterOptions {
  readonly r: number
  readonly alpha: number
  readonly dropout?: number
  readonly rslora?: boolean
  readonly dora?: boolean
  /** Patterns (q, k, v, o, mlp_in, mlp_out, all, full names, /regex/). Default q,v as in PEFT. */
  readonly targetModules?: ReadonlyArray<string>
  readonly seed?: number
}

/** PEFT's adapter_config.json (the keys we write and read; PEFT ignores base_model_fingerprint). */
export interface PeftAdapterConfig {
  peft_type: "LORA"
  task_type: "CAUSAL_LM"
  r: number
  lora_alpha: number
  lora_dropout: number
  target_modules: string[]
  use_dora: boolean
  use_rslora: boolean
  bias: "none"
  fan_in_fan_out: false
  inference_mode: boolean
  init_lora_weights: true
  modules_to_save: null
  base_model_name_or_path: string
  base_model_fingerprint: string
}

export class AdapterError extends Error {
  constructor(message: string) {
    super(message)
    this.name = "AdapterError"
  }
}

/** The base weight variable of a linear layer, [in, out] as the forward uses it. */
export const linearWeight = (model: HookableModel, name: string): tf.Variable<tf.Rank.R2> => {
  const v = model.params.get(`${name}.weight`)
  if (!v) throw new AdapterError(`the model has no parameter "${name}.weight"`)
  if (v.shape.length !== 2) throw new AdapterError(`"${name}.weight" has shape [${v.shape.join(", ")}], expected a matrix`)
  return v as tf.Variable<tf.Rank.R2>
}
const dims = (model: HookableModel, name: string) => {
  const [inF, outF] = linearWeight(model, name).shape
  return { inF: inF!, outF: outF! }
}

/**
 * A fingerprint of the base model: sha256 over every parameter's name, shape and float32 bytes,
 * in name order. An adapter trained on one base is refused by any other.
 */
export const baseFingerprint = (model: HookableModel): string => {
  const h = createHash("sha256")
  for (const name of [...model.params.keys()].sort()) {
    const v = model.params.get(name)!
    h.update(`${name}[${v.shape.join(",")}]`)
    const d = v.dataSync() as Float32Array
    h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength))
  }
  return `sha256:${h.digest("hex")}`
}

export class Adapter {
  readonly layers: Map<string, LoraLayer>
  readonly options: Required<Omit<AdapterOptions, "seed" | "targetModules">> & { targetModules: string[] }
  readonly baseName: string
  readonly fingerprint: string
  private attachedTo: HookableModel | undefined
  private quantized: Map<string, QuantizedMatrix> | undefined
  /** target → shape of the float32 base weight given back to the allocator by `releaseFloat32` */
  private released: Map<string, number[]> | undefined

  private constructor(layers: Map<string, LoraLayer>, options: Adapter["options"], baseName: string, fingerprint: string) {
    this.layers = layers
    this.options = options
    this.baseName = baseName
    this.fingerprint = fingerprint
  }

  /** A fresh adapter (B = 0: the adapted model starts equal to the base). */
  static create(model: HookableModel, o: AdapterOptions, base: { name: string; fingerprint?: string }): Adapter {
    const targets = selectTargets(model.linearNames(), o.targetModules ?? ["q", "v"])
    const layers = new Map<string, LoraLayer>()
    targets.forEach((name, i) => {
      const { inF, outF } = dims(model, name)
      const layer = new LoraLayer(name, inF, outF, { ...o, ...(o.seed !== undefined ? { seed: o.seed + i } : {}) })
      layer.initMagnitude(linearWeight(model, name))
      layers.set(name, layer)
    })
    const options = { r: o.r, alpha: o.alpha, dropout: o.dropout ?? 0, rslora: o.rslora ?? false, dora: o.dora ?? false, targetModules: targets }
    return new Adapter(layers, options, base.name, base.fingerprint ?? baseFingerprint(model))
  }

  /**
   * Install the adapter on the model's linear hook; with `quantize`, the frozen base of each
   * target is held in int8/4-bit and dequantised in every forward. With `releaseFloat32` too, the
   * float32 base weights of the targets are disposed (a 1-element placeholder stands in the
   * model's parameter map), so the memory is really saved — QLoRA's point; `detach` puts back
   * the dequantised weights (close to, not equal to, the originals: reload the base to get those).
   */
  attach(model: HookableModel, opts: { quantize?: QuantBits; releaseFloat32?: boolean } = {}): void {
    if (this.attachedTo) throw new AdapterError("the adapter is already attached; detach it first")
    if (opts.releaseFloat32 && !opts.quantize) throw new AdapterError("releaseFloat32 needs quantize: 8 or 4 (the float32 base is what the forward would use otherwise)")
    if (opts.quantize) {
      this.quantized = new Map()
      for (const name of this.layers.keys()) {
        const w = linearWeight(model, name)
        this.quantized.set(name, quantize(w.dataSync() as Float32Array, w.shape[0], w.shape[1], opts.quantize))
      }
    }
    if (opts.releaseFloat32) {
      this.released = new Map()
      for (const name of this.layers.keys()) {
        const key = `${name}.weight`
        const w = model.params.get(key)!
        this.released.set(name, w.shape)
        model.params.set(key, tf.tidy(() => tf.variable(tf.zeros([1, 1]), false, `${w.name}_released`)))
        w.dispose()
      }
    }
    for (const [name, layer] of this.layers) {
      const ov: LinearOverride = this.quantized ? new QuantizedLinear(this.quantized.get(name)!, layer) : layer
      model.setLinearOverride(name, ov)
    }
    this.attachedTo = model
  }

  detach(): void {
    if (!this.attachedTo) return
    for (const name of this.layers.keys()) this.attachedTo.setLinearOverride(name, undefined)
    if (this.released) {
      for (const [name, shape] of this.released) {
        const key = `${name}.weight`
        const placeholder = this.attachedTo.params.get(key)!
        this.attachedTo.params.set(key, tf.tidy(() => tf.variable(tf.tensor(dequantize(this.quantized!.get(name)!), shape), false, placeholder.name.replace(/_released$/, ""))))
        placeholder.dispose()
      }
      this.released = undefined
    }
    this.attachedTo = undefined
    this.quantized = undefined
  }

  /** Bytes held by the quantised base of the target layers vs the same weights in float32. */
  quantizedMemory(): { float32Bytes: number; quantizedBytes: number } | undefined {
    if (!this.quantized) return undefined
    let f = 0
    let q = 0
    for (const m of this.quantized.values()) {
      f += 4 * m.inFeatures * m.outFeatures
      q += quantizedBytes(m)
    }
    return { float32Bytes: f, quantizedBytes: q }
  }

  set training(on: boolean) {
    for (const l of this.layers.values()) l.training = on
  }

  variables(): tf.Variable[] {
    return [...this.layers.values()].flatMap((l) => l.variables())
  }

  numParams(): number {
    return this.variables().reduce((n, v) => n + v.size, 0)
  }

  /** Fold every layer into the base weights (for serving one adapter at full speed). */
  merge(model: HookableModel): void {
    for (const [name, l] of this.layers) l.merge(linearWeight(model, name))
  }
  unmerge(model: HookableModel): void {
    for (const [name, l] of this.layers) l.unmerge(linearWeight(model, name))
  }

  config(): PeftAdapterConfig {
    return {
      peft_type: "LORA",
      task_type: "CAUSAL_LM",
      r: this.options.r,
      lora_alpha: this.options.alpha,
      lora_dropout: this.options.dropout,
      target_modules: this.options.targetModules,
      use_dora: this.options.dora,
      use_rslora: this.options.rslora,
      bias: "none",
      fan_in_fan_out: false,
      inference_mode: true,
      init_lora_weights: true,
      modules_to_save: null,
      base_model_name_or_path: this.baseName,
      base_model_fingerprint: this.fingerprint,
    }
  }

  /** PEFT tensor names and layouts (A as [r, in], B as [out, r]), in name order. */
  tensors(): Map<string, STTensor> {
    const out = new Map<string, STTensor>()
    for (const name of [...this.layers.keys()].sort()) {
      const l = this.layers.get(name)!
      out.set(`${PREFIX}${name}.lora_A.weight`, { dtype: "F32", shape: [l.r, l.inFeatures], data: tf.tidy(() => tf.transpose(l.A).dataSync() as Float32Array) })
      out.set(`${PREFIX}${name}.lora_B.weight`, { dtype: "F32", shape: [l.outFeatures, l.r], data: tf.tidy(() => tf.transpose(l.B).dataSync() as Float32Array) })
      if (l.magnitude) out.set(`${PREFIX}${name}.lora_magnitude_vector`, { dtype: "F32", shape: [l.outFeatures], data: l.magnitude.dataSync() as Float32Array })
    }
    return out
  }

  /**
   * Write adapter_config.json and adapter_model.safetensors into `dir` atomically (the model's
   * writeFolderAtomic: a temporary sibling folder, fsync, rename). Returns bytes on disk.
   */
  save(dir: string): number {
    const bytes = encodeSafetensors(this.tensors(), { format: "pt" })
    writeFolderAtomic(dir, { [ADAPTER_WEIGHTS]: bytes, [ADAPTER_CONFIG]: JSON.stringify(this.config(), null, 2) + "\n" })
    return adapterSizeOnDisk(dir)
  }

  /**
   * Load an adapter saved by save() or by PEFT. Refused with an AdapterError when: the folder or
   * a file is missing or unreadable; peft_type is not LORA; the fingerprint names another base;
   * a target module is not a linear layer of the model; a tensor is missing or has the wrong shape.
   */
  static load(dir: string, model: HookableModel, opts: { fingerprint?: string; allowUnknownBase?: boolean } = {}): Adapter {
    const cfgPath = path.join(dir, ADAPTER_CONFIG)
    const wPath = path.join(dir, ADAPTER_WEIGHTS)
    if (!fs.existsSync(cfgPath)) throw new AdapterError(`${dir}: no ${ADAPTER_CONFIG}; this is not an adapter folder (expected ${ADAPTER_CONFIG} and ${ADAPTER_WEIGHTS})`)
    let cfg: Partial<PeftAdapterConfig>
    try {
      cfg = JSON.parse(fs.readFileSync(cfgPath, "utf8"))
    } catch (e) {
      throw new AdapterError(`${cfgPath}: not valid JSON (${(e as Error).message})`)
    }
    if (cfg.peft_type !== "LORA") throw new AdapterError(`${cfgPath}: peft_type is ${JSON.stringify(cfg.peft_type)}; only "LORA" adapters (with or without use_dora) can be loaded`)
    for (const k of ["r", "lora_alpha"] as const) if (typeof cfg[k] !== "number" || !(cfg[k]! > 0)) throw new AdapterError(`${cfgPath}: "${k}" must be a positive number`)
    const targets = Array.isArray(cfg.target_modules) ? cfg.target_modules : typeof cfg.target_modules === "string" ? [cfg.target_modules] : undefined
    if (!targets || targets.length === 0) throw new AdapterError(`${cfgPath}: "target_modules" must list the adapted modules`)
    const linear = model.linearNames()
    const missing = targets.filter((t) => !linear.some((n) => n === t || n.endsWith(`.${t}`)))
    if (missing.length > 0)
      throw new AdapterError(`${cfgPath}: target module${missing.length > 1 ? "s" : ""} ${missing.map((m) => `"${m}"`).join(", ")} not found in the model (its linear layers: ${linear.slice(0, 8).join(", ")}${linear.length > 8 ? ", …" : ""}); the adapter was made for a different architecture`)
    const mine = opts.fingerprint ?? baseFingerprint(model)
    if (cfg.base_model_fingerprint === undefined) {
      if (!opts.allowUnknownBase) throw new AdapterError(`${cfgPath}: no base_model_fingerprint, so it cannot be checked against this base; pass allowUnknownBase to load it anyway`)
    } else if (cfg.base_model_fingerprint !== mine)
      throw new AdapterError(`${cfgPath}: the adapter was trained on another base model (${cfg.base_model_name_or_path ?? "unnamed"}, ${cfg.base_model_fingerprint.slice(0, 19)}…), not this one (${mine.slice(0, 19)}…); load it with the base it was trained on`)
    if (!fs.existsSync(wPath)) throw new AdapterError(`${dir}: no ${ADAPTER_WEIGHTS}`)
    const { tensors } = decodeSafetensors(fs.readFileSync(wPath), wPath)
    const names = selectTargets(linear, targets)
    const r = cfg.r!
    const layers = new Map<string, LoraLayer>()
    try {
      for (const name of names) {
        const { inF, outF } = dims(model, name)
        const get = (suffix: string, shape: number[]): STTensor => {
          const key = `${PREFIX}${name}.${suffix}`
          const t = tensors.get(key)
          if (!t) throw new AdapterError(`${wPath}: tensor "${key}" is missing`)
          if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
            throw new AdapterError(`${wPath}: tensor "${key}" has shape [${t.shape.join(", ")}], but this model needs [${shape.join(", ")}] (r=${r}, ${name} is ${inF}→${outF})`)
          return t
        }
        const a = get("lora_A.weight", [r, inF])
        const b = get("lora_B.weight", [outF, r])
        const layer = new LoraLayer(name, inF, outF, { r, alpha: cfg.lora_alpha!, dropout: cfg.lora_dropout ?? 0, rslora: cfg.use_rslora ?? false, dora: cfg.use_dora ?? false })
        layers.set(name, layer)
        layer.A.assign(tf.tidy(() => tf.transpose(tf.tensor2d(Float32Array.from(a.data), [r, inF]))) as tf.Tensor2D)
        layer.B.assign(tf.tidy(() => tf.transpose(tf.tensor2d(Float32Array.from(b.data), [outF, r]))) as tf.Tensor2D)
        if (cfg.use_dora) {
          const m = get("lora_magnitude_vector", [outF])
          layer.magnitude = tf.variable(tf.tensor1d(Float32Array.from(m.data)), true, `${layer.id}.lora_magnitude_vector`)
        }
      }
    } catch (e) {
      for (const l of layers.values()) l.dispose()
      throw e
    }
    const options = { r, alpha: cfg.lora_alpha!, dropout: cfg.lora_dropout ?? 0, rslora: cfg.use_rslora ?? false, dora: cfg.use_dora ?? false, targetModules: names }
    return new Adapter(layers, options, cfg.base_model_name_or_path ?? "", cfg.base_model_fingerprint ?? mine)
  }

  dispose(): void {
    this.detach()
    for (const l of this.layers.values()) l.dispose()
  }
}

export const adapterSizeOnDisk = (dir: string): number =>
  [ADAPTER_CONFIG, ADAPTER_WEIGHTS].reduce((n, f) => n + (fs.existsSync(path.join(dir, f)) ? fs.statSync(path.join(dir, f)).size : 0), 0)
