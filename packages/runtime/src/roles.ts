/**
 * Agent roles. The one list in the code base: add a role here (and say what it is for) when
 * a new kind of agent appears.
 */
export const Roles = {
  /** Serves a model (generate, score, train/eval jobs). */
  expert: "serves a model: generate, score, adapters",
  /** Gates requests to experts (MoE) and aggregates answers (MoA). */
  router: "gates requests to experts and aggregates their answers",
  /** Runs preference-optimization rounds. */
  coordinator: "runs preference-optimization rounds",
  /** The entry point for users and other systems (console, HTTP). */
  gateway: "entry point for users and other systems",
  /** Anything else. */
  custom: "anything else",
} as const

export type Role = keyof typeof Roles
export const RoleNames = Object.keys(Roles) as ReadonlyArray<Role>
export const isRole = (u: unknown): u is Role => typeof u === "string" && Object.prototype.hasOwnProperty.call(Roles, u)
