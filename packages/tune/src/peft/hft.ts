/**
 * Half Fine-Tuning (Hui et al. 2024, arXiv 2404.18466): in each round, within every category of
 * parameters, half of the modules are frozen and the other half are trained; the next round
 * draws a new half. The frozen half keeps what the model knew, which is the point.
 *
 * Categories (per transformer block, as in the paper's figure): attention {q, k, v, o},
 * MLP {fc_in, fc_out}, norms {ln_1, ln_2}; outside the blocks: {wte, wpe, lm_head, ln_f}.
 * A module's weight and bias move together. A category with an odd count trains ⌊n/2⌋ or ⌈n/2⌉
 * modules, by a coin flip per round, so that on average exactly half is trained.
 */
import { rng } from "@moa/model"


/** The module a parameter belongs to: `h.0.attn.q_proj.weight` → `h.0.attn.q_proj`. */
export const moduleOf = (param: string): string => param.replace(/\.(weight|bias)$/, "")

export const hftCategory = (module: string): string => {
  const m = /^h\.(\d+)\.(attn|mlp|ln_1|ln_2)/.exec(module)
  if (m) return m[2] === "ln_1" || m[2] === "ln_2" ? `h.${m[1]}.norm` : `h.${m[1]}.${m[2]}`
  return "outer"
}

/** category → modules, for a list of parameter names. */
export const hftCategories = (paramNames: ReadonlyArray<string>): Map<string, string[]> => {
  const cats = new Map<string, string[]>()
  for (const p of paramNames) {
    const mod = moduleOf(p)
    const c = hftCategory(mod)
    const list = cats.get(c) ?? []
    if (!list.includes(mod)) list.push(mod)
    cats.set(c, list)
  }
  for (const l of cats.values()) l.sort()
  return cats
}


/** The parameter names trained in `round` (the rest are frozen for that round). */
export const hftTrainable = (paramNames: ReadonlyArray<string>, round: number, seed = 0): string[] => {
  const random = rng((seed * 1000003 + round * 7919 + 17) >>> 0)
  const trainMods = new Set<string>()
  for (const [, mods] of [...hftCategories(paramNames)].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const order = mods.slice()
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1))
      ;[order[i], order[j]] = [order[j]!, order[i]!]
    }
    const k = order.length % 2 === 0 ? order.length / 2 : Math.floor(order.length / 2) + (random() < 0.5 ? 1 : 0)
    for (const m of order.slice(0, k)) trainMods.add(m)
  }
  return paramNames.filter((p) => trainMods.has(moduleOf(p)))
}
