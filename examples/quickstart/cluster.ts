/**
 * The quickstart cluster: rule-based agents (no model needed) so `moa up`, `moa status` and
 * `moa call` work before any model exists.
 *
 *   npm run moa -- up examples/quickstart/cluster.ts
 *   npm run moa -- call router generate '{"prompt":"2 + 3 * 4"}'
 */
import { Schema } from "effect"
import { defineAgent, defineCluster, verb } from "@moa/runtime"
import type { GenerateResponse } from "@moa/protocol"

const Text = Schema.Struct({ text: Schema.String })
const Sum = Schema.Struct({ a: Schema.Number, b: Schema.Number })

const answer = (text: string, model: string): GenerateResponse => ({
  text,
  tokens: text.split(/\s+/).filter(Boolean).length,
  finishReason: "stop",
  model,
})

/** Repeats the prompt; streams it word by word when asked to. */
const echo = defineAgent({
  name: "echo",
  role: "expert",
  replicas: 2,
  description: "repeats what it is told",
  setup: (ctx) => {
    ctx.setBackend("rules")
    return { greeting: "you said:" }
  },
  handlers: {
    generate: async function* (req, ctx) {
      const words = `${ctx.state.greeting} ${req.prompt}`.split(" ")
      const max = req.maxTokens ?? 64
      for (let i = 0; i < Math.min(words.length, max); i++) {
        yield { index: i, text: (i ? " " : "") + words[i], tokens: i + 1 }
      }
      yield { index: words.length, text: "", done: true, finishReason: words.length > max ? "length" : "stop", tokens: Math.min(words.length, max) }
    },
  },
})

/** Shouts: upper-cases its input (a standard `generate` and a custom typed verb). */
const upper = defineAgent({
  name: "upper",
  role: "expert",
  setup: (ctx) => ctx.setBackend("rules"),
  handlers: {
    generate: (req) => answer(req.prompt.toUpperCase(), "upper"),
    upper: verb({ request: Text, response: Text }, (req) => ({ text: req.text.toUpperCase() })),
  },
})

/** Arithmetic: `add {a, b}`, and `generate` evaluates + - * / expressions. */
const calc = defineAgent({
  name: "calc",
  role: "expert",
  setup: (ctx) => ctx.setBackend("rules"),
  handlers: {
    add: verb({ request: Sum, response: Schema.Struct({ sum: Schema.Number }) }, (req) => ({ sum: req.a + req.b })),
    generate: (req) => {
      const expr = req.prompt.replace(/[^0-9+\-*/(). ]/g, "")
      if (!/\d/.test(expr)) return answer("I only do arithmetic, like 2 + 3 * 4", "calc")
      // A tiny, safe evaluator: the expression has only digits, operators and parentheses.
      const value = Function(`"use strict"; return (${expr})`)() as number
      return answer(`${expr.trim()} = ${value}`, "calc")
    },
  },
})

/** Sends each prompt to one expert by simple rules (the real router gates with a model). */
const router = defineAgent({
  name: "router",
  role: "router",
  handlers: {
    generate: async (req, ctx) => {
      const expert = /\d\s*[-+*/]\s*\d/.test(req.prompt) ? "calc" : /^shout\b/i.test(req.prompt) ? "upper" : "echo"
      const prompt = expert === "upper" ? req.prompt.replace(/^shout\s*/i, "") : req.prompt
      const reply = await ctx.client.call(expert, "generate", { ...req, prompt, stream: false }, { timeoutMs: Math.max(100, ctx.deadline - Date.now()) })
      return { ...reply, model: expert }
    },
    route: (req: unknown) => {
      const prompt = String((req as { prompt?: unknown })?.prompt ?? "")
      return { expert: /\d\s*[-+*/]\s*\d/.test(prompt) ? "calc" : /^shout\b/i.test(prompt) ? "upper" : "echo" }
    },
  },
})

export default defineCluster({ name: "quickstart", agents: [echo, upper, calc, router] })

/** Calls `moa up --demo` makes once the cluster is up. */
export const demo = [
  { agent: "router", verb: "generate", request: { prompt: "2 + 3 * 4" } },
  { agent: "router", verb: "generate", request: { prompt: "shout hello from moa" } },
  { agent: "router", verb: "generate", request: { prompt: "hello, who is there?" } },
  { agent: "echo", verb: "generate", request: { prompt: "streamed word by word", stream: true }, stream: true },
  { agent: "calc", verb: "add", request: { a: 40, b: 2 } },
]
