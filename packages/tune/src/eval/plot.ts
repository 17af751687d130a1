/**
 * A loss-curve plot as SVG, drawn from a training log; no plotting dependency.
 * Each series is a list of (step, value) points; the y axis is linear or log10.
 */

export interface Series {
  readonly name: string
  readonly points: ReadonlyArray<readonly [number, number]>
}

export interface PlotOptions {
  readonly title?: string
  readonly xLabel?: string
  readonly yLabel?: string
  readonly width?: number
  readonly height?: number
  readonly logY?: boolean
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/** "Nice" tick values covering [lo, hi]: steps of 1, 2 or 5 × 10^k. */
export const niceTicks = (lo: number, hi: number, target = 5): number[] => {
  if (!(hi > lo)) return [lo]
  const raw = (hi - lo) / target
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag
  const out: number[] = []
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)))
  return out
}
const fmt = (v: number) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : String(Number(v.toPrecision(3))))

export const lossCurveSvg = (series: ReadonlyArray<Series>, opts: PlotOptions = {}): string => {
  const W = opts.width ?? 640
  const H = opts.height ?? 400
  const m = { l: 64, r: 16, t: opts.title ? 36 : 16, b: 48 }
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.logY || y > 0))
  if (pts.length === 0) throw new Error("lossCurveSvg: no finite points to plot (is the training log empty?)")
  const ty = (y: number) => (opts.logY ? Math.log10(y) : y)
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))]
  let [y0, y1] = [Math.min(...pts.map((p) => ty(p[1]))), Math.max(...pts.map((p) => ty(p[1])))]
  if (x1 === x0) x1 = x0 + 1
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5]
  const pad = (y1 - y0) * 0.05
  y0 -= pad
  y1 += pad
  const px = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r)
  const py = (y: number) => H - m.b - ((ty(y) - y0) / (y1 - y0)) * (H - m.t - m.b)
  const out: string[] = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`)
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  if (opts.title) out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`)
  // axes and grid
  for (const xv of niceTicks(x0, x1)) {
    const X = px(xv).toFixed(1)
    out.push(`<line x1="${X}" y1="${m.t}" x2="${X}" y2="${H - m.b}" stroke="#eee"/>`)
    out.push(`<text x="${X}" y="${H - m.b + 16}" text-anchor="middle">${fmt(xv)}</text>`)
  }
  const yTicks = opts.logY ? niceTicks(y0, y1).map((v) => 10 ** v) : niceTicks(y0, y1)
  for (const yv of yTicks) {
    const Y = py(yv).toFixed(1)
    out.push(`<line x1="${m.l}" y1="${Y}" x2="${W - m.r}" y2="${Y}" stroke="#eee"/>`)
    out.push(`<text x="${m.l - 6}" y="${Y}" text-anchor="end" dominant-baseline="middle">${fmt(yv)}</text>`)
  }
  out.push(`<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`)
  out.push(`<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`)
  out.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 10}" text-anchor="middle">${esc(opts.xLabel ?? "step")}</text>`)
  out.push(`<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel ?? "loss")}${opts.logY ? " (log)" : ""}</text>`)
  // series
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length]
    const ps = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.logY || y > 0))
    if (ps.length === 0) return
    const d = ps.map(([x, y], j) => `${j === 0 ? "M" : "L"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" ")
    out.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="1.5"><title>${esc(s.name)}</title></path>`)
    if (ps.length === 1) out.push(`<circle cx="${px(ps[0]![0]).toFixed(1)}" cy="${py(ps[0]![1]).toFixed(1)}" r="3" fill="${c}"/>`)
    const ly = m.t + 8 + i * 16
    out.push(`<line x1="${W - m.r - 130}" y1="${ly}" x2="${W - m.r - 110}" y2="${ly}" stroke="${c}" stroke-width="2"/>`)
    out.push(`<text x="${W - m.r - 104}" y="${ly}" dominant-baseline="middle">${esc(s.name)}</text>`)
  })
  out.push("</svg>")
  return out.join("\n") + "\n"
}

/** One line of a training log (JSONL written by the trainer). */
export interface LogEntry {
  readonly step: number
  readonly loss?: number
  readonly valLoss?: number
  readonly [k: string]: unknown
}

/** Series for `loss` and `valLoss` from a training log's lines. */
export const seriesFromLog = (entries: ReadonlyArray<{ step: number; loss?: number; valLoss?: number }>, prefix = ""): Series[] => {
  const train = entries.filter((e) => typeof e.loss === "number").map((e) => [e.step, e.loss as number] as const)
  const val = entries.filter((e) => typeof e.valLoss === "number").map((e) => [e.step, e.valLoss as number] as const)
  const out: Series[] = []
  if (train.length) out.push({ name: `${prefix}train loss`, points: train })
  if (val.length) out.push({ name: `${prefix}validation loss`, points: val })
  return out
}

/** Parse a JSONL training log, skipping lines that are not log entries (with their line numbers in the error). */
export const parseLog = (text: string, file: string): LogEntry[] =>
  text
    .split("\n")
    .map((l, i) => [l.trim(), i + 1] as const)
    .filter(([l]) => l.length > 0)
    .map(([l, n]) => {
      let v: unknown
      try {
        v = JSON.parse(l)
      } catch {
        throw new Error(`${file}:${n}: not valid JSON; a training log has one JSON object per line`)
      }
      if (typeof v !== "object" || v === null || typeof (v as LogEntry).step !== "number") throw new Error(`${file}:${n}: a log entry needs a numeric "step"`)
      return v as LogEntry
    })
