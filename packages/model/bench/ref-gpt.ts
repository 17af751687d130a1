// A minimal GPT with exactly the model contract's architecture and parameter names
// (docs/model-contract), used by the profiler and by the benchmark when packages/model/src/gpt.ts
// is not there. Same maths as bench/torch_gpt.py, so the two can be compared side by side.
// Pre-norm blocks, LayerNorm eps 1e-5, GELU x·sigmoid(1.702x), learned positions, tied embeddings.
import * as tf from "@tensorflow/tfjs"

export interface RefConfig {
  vocabSize: number
  contextLength: number
  dModel: number
  nLayers: number
  nHeads: number
}

export class RefGPT {
  readonly params = new Map<string, tf.Variable>()
  constructor(readonly cfg: RefConfig, seed = 1) {
    const { vocabSize: V, contextLength: C, dModel: d, nLayers: L } = cfg
    const p = (name: string, t: tf.Tensor) => this.params.set(name, tf.variable(t, true, name))
    const normal = (shape: number[], std: number) => tf.randomNormal(shape, 0, std, "float32", seed++)
    p("wte.weight", normal([V, d], 0.02))
    p("wpe.weight", normal([C, d], 0.02))
    for (let i = 0; i < L; i++) {
      for (const ln of ["ln_1", "ln_2"]) {
        p(`h.${i}.${ln}.weight`, tf.ones([d]))
        p(`h.${i}.${ln}.bias`, tf.zeros([d]))
      }
      // linear weights kept [in, out] in memory (transposed to nn.Linear's [out, in] in files)
      for (const n of ["q_proj", "k_proj", "v_proj"]) p(`h.${i}.attn.${n}.weight`, normal([d, d], 0.02))
      p(`h.${i}.attn.o_proj.weight`, normal([d, d], 0.02 / Math.sqrt(2 * L)))
      p(`h.${i}.mlp.fc_in.weight`, normal([d, 4 * d], 0.02))
      p(`h.${i}.mlp.fc_out.weight`, normal([4 * d, d], 0.02 / Math.sqrt(2 * L)))
      for (const n of ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.fc_out"]) p(`h.${i}.${n}.bias`, tf.zeros([d]))
      p(`h.${i}.mlp.fc_in.bias`, tf.zeros([4 * d]))
    }
    p("ln_f.weight", tf.ones([d]))
    p("ln_f.bias", tf.zeros([d]))
  }

  private w(name: string): tf.Variable {
    const v = this.params.get(name)
    if (!v) throw new Error(`RefGPT: no parameter ${name}`)
    return v
  }

  private linear(x: tf.Tensor2D, name: string): tf.Tensor2D {
    return tf.add(tf.matMul(x, this.w(`${name}.weight`)), this.w(`${name}.bias`))
  }

  private layerNorm(x: tf.Tensor2D, name: string): tf.Tensor2D {
    const mean = tf.mean(x, -1, true)
    const xc = tf.sub(x, mean)
    const variance = tf.mean(tf.square(xc), -1, true)
    return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(variance, 1e-5))), this.w(`${name}.weight`)), this.w(`${name}.bias`))
  }

  /** ids [B,T] int32 → logits [B·T, V] */
  forward(ids: tf.Tensor2D): tf.Tensor2D {
    const { dModel: d, nHeads: H, nLayers: L } = this.cfg
    const [B, T] = ids.shape
    const hd = d / H
    const tok = tf.gather(this.w("wte.weight"), tf.reshape(ids, [-1])) // [B·T, d]
    const pos = tf.slice(this.w("wpe.weight"), [0, 0], [T, d]) // [T, d]
    let x = tf.reshape(tf.add(tf.reshape(tok, [B, T, d]), pos), [B * T, d]) as tf.Tensor2D
    const mask = tf.linalg.bandPart(tf.ones([T, T]), -1, 0) // [T,T] lower triangle
    const negMask = tf.mul(tf.sub(1, mask), -1e9)
    for (let i = 0; i < L; i++) {
      const h = this.layerNorm(x, `h.${i}.ln_1`)
      const heads = (t: tf.Tensor2D) => tf.transpose(tf.reshape(t, [B, T, H, hd]), [0, 2, 1, 3]) // [B,H,T,hd]
      const q = heads(this.linear(h, `h.${i}.attn.q_proj`))
      const k = heads(this.linear(h, `h.${i}.attn.k_proj`))
      const v = heads(this.linear(h, `h.${i}.attn.v_proj`))
      const att = tf.softmax(tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(hd)), negMask)) // [B,H,T,T]
      const y = tf.reshape(tf.transpose(tf.matMul(att, v), [0, 2, 1, 3]), [B * T, d]) as tf.Tensor2D
      x = tf.add(x, this.linear(y, `h.${i}.attn.o_proj`))
      const h2 = this.layerNorm(x, `h.${i}.ln_2`)
      const u = this.linear(h2, `h.${i}.mlp.fc_in`)
      const g = tf.mul(u, tf.sigmoid(tf.mul(u, 1.702))) as tf.Tensor2D
      x = tf.add(x, this.linear(g, `h.${i}.mlp.fc_out`))
    }
    x = this.layerNorm(x, "ln_f")
    return tf.matMul(x, this.w("wte.weight"), false, true) // tied
  }

  /** mean cross-entropy of next-token targets [B,T] */
  loss(ids: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
    const logits = this.forward(ids)
    const V = this.cfg.vocabSize
    const logp = tf.logSoftmax(logits) as tf.Tensor2D
    const onehot = tf.oneHot(tf.reshape(targets, [-1]), V)
    return tf.neg(tf.mean(tf.sum(tf.mul(logp, onehot), -1))) as tf.Scalar
  }

  numParams(): number {
    let n = 0
    for (const v of this.params.values()) n += v.size
    return n
  }
}

/** One Adam training step; returns the loss. */
export function refTrainStep(model: RefGPT, opt: tf.Optimizer, ids: tf.Tensor2D, targets: tf.Tensor2D): number {
  const vars = [...model.params.values()]
  return tf.tidy(() => {
    const { value, grads } = tf.variableGrads(() => model.loss(ids, targets), vars)
    opt.applyGradients(grads)
    return value.dataSync()[0]
  })
}
