// Gate features from a language model: the mean over positions of its last hidden states
// (after ln_f) for `<bos> prompt`. Duck-typed on packages/model's GPT and Tokenizer so the
// router does not depend on the model package; pass `loadCheckpoint(dir)`'s model and tokenizer.
import * as tf from "@tensorflow/tfjs"
import { externalFeatures, type FeatureExtractor } from "./features.ts"

export interface HiddenStateModel {
  readonly config: { readonly contextLength: number; readonly dModel: number }
  /** Last hidden states (B*T, C) for ids (B, T). */
  hidden(ids: tf.Tensor2D): tf.Tensor2D
}

export interface PromptTokenizer {
  readonly bos: number
  encode(text: string): number[]
}

/** Mean-pooled hidden states as a FeatureExtractor named `name` (stored in the gate config). */
export const pooledHiddenFeatures = (model: HiddenStateModel, tokenizer: PromptTokenizer, name = "base-mean-hidden"): FeatureExtractor => {
  const C = model.config.dModel
  const T = model.config.contextLength
  return externalFeatures(name, C, async (prompts) =>
    prompts.map((p) =>
      tf.tidy(() => {
        const ids = [tokenizer.bos, ...tokenizer.encode(p)].slice(0, T) // (T')
        const h = model.hidden(tf.tensor2d([ids], [1, ids.length], "int32")) // (T', C)
        return tf.mean(h, 0).dataSync() as Float32Array // (C)
      }),
    ),
  )
}
