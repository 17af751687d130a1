/**
 * @moa/model — the model engine: tokenizers, a nanoGPT-style transformer over tfjs,
 * training (AdamW), generation (KV cache, sampling, streaming, batching), HF-layout
 * checkpoints (config.json + model.safetensors + tokenizer.json) and backend selection.
 *
 * Names follow /work/notes/model-contract.md. Deviations: none.
 * Notes for users of the contract:
 *  - in memory, linear weights are [in, out] (x @ W); safetensors files hold [out, in].
 *  - `model.hidden(ids, opts)` (B*T, C) and `model.head(h)` (N, V) are exposed so losses
 *    can avoid computing logits they do not need.
 */
export * from "./backend.js"
export * from "./gpt.js"
export * from "./tokenizer.js"
export * from "./train.js"
export * from "./generate.js"
export * from "./checkpoint.js"
export * from "./data.js"
export { installWasmKernelFixes, wasmKernelFixesInstalled, PINNED_TFJS_VERSION } from "./wasm-kernels.js"
