/**
 * The part of the model contract (notes/model-contract.md) that PEFT builds on: every linear
 * layer goes through one function that an override can replace. Declared structurally here so
 * that the adapters can be built and tested on a bare linear layer as well as on the GPT.
 */
import type * as tf from "@tensorflow/tfjs"

export interface LinearContext {
  /** [in, out] as used in the forward. */
  readonly weight: tf.Tensor2D
  readonly bias?: tf.Tensor1D
  /** x @ W + b with the model's own weight. */
  readonly base: (x: tf.Tensor2D) => tf.Tensor2D
}

export interface LinearOverride {
  forward(x: tf.Tensor2D /* [N, in] */, ctx: LinearContext): tf.Tensor2D /* [N, out] */
}

export interface HookableModel {
  readonly params: Map<string, tf.Variable>
  linearNames(): string[]
  setLinearOverride(name: string, override: LinearOverride | undefined): void
}

/** Pattern names for target modules (PEFT-style short names) → the contract's linear names. */
export const TARGET_ALIASES: Record<string, string> = {
  q: "attn.q_proj",
  k: "attn.k_proj",
  v: "attn.v_proj",
  o: "attn.o_proj",
  q_proj: "attn.q_proj",
  k_proj: "attn.k_proj",
  v_proj: "attn.v_proj",
  o_proj: "attn.o_proj",
  mlp_in: "mlp.fc_in",
  mlp_out: "mlp.fc_out",
  fc_in: "mlp.fc_in",
  fc_out: "mlp.fc_out",
  lm_head: "lm_head",
}

/**
 * Pick the linear layers to adapt. Each pattern is an alias (`q`, `k`, `v`, `o`, `mlp_in`,
 * `mlp_out`, `all`), a full name (`h.0.attn.q_proj`), a suffix (`attn.q_proj`) or a regular
 * expression written `/.../`. A pattern that matches nothing is an error naming what exists.
 */
export const selectTargets = (linearNames: ReadonlyArray<string>, patterns: ReadonlyArray<string>): string[] => {
  if (patterns.length === 0) throw new Error("no target modules given: pass e.g. q,v or all")
  const chosen = new Set<string>()
  for (const raw of patterns) {
    const p = raw.trim()
    let hits: string[]
    if (p === "all" || p === "all-linear") hits = linearNames.filter((n) => n !== "lm_head")
    else if (p.startsWith("/") && p.endsWith("/") && p.length > 2) {
      const re = new RegExp(p.slice(1, -1))
      hits = linearNames.filter((n) => re.test(n))
    } else {
      const suffix = TARGET_ALIASES[p] ?? p
      hits = linearNames.filter((n) => n === suffix || n.endsWith(`.${suffix}`))
    }
    if (hits.length === 0)
      throw new Error(`target module "${p}" matches no linear layer of the model; it has ${summarize(linearNames)} (aliases: q, k, v, o, mlp_in, mlp_out, all)`)
    for (const h of hits) chosen.add(h)
  }
  return linearNames.filter((n) => chosen.has(n))
}

const summarize = (names: ReadonlyArray<string>): string => {
  const kinds = [...new Set(names.map((n) => n.replace(/^h\.\d+\./, "h.<i>.")))]
  return kinds.join(", ")
}
