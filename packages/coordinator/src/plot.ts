/** An SVG line chart of reward and held-out accuracy per round, one line pair per expert (no dependencies). */
import type { RoundSummary } from "./logic.ts"

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

/**
 * Round 0 is the accuracy before any round; round r shows the mean sampled reward of round r
 * (dashed) and the held-out accuracy of the version served after round r (solid). Both in [0, 1].
 */
export function roundsSvg(rows: ReadonlyArray<RoundSummary>, title = "preference rounds"): string {
  const W = 640
  const H = 360
  const m = { l: 50, r: 160, t: 30, b: 40 }
  const experts = [...new Set(rows.map((r) => r.expert))]
  const maxRound = Math.max(1, ...rows.map((r) => r.round))
  const x = (round: number) => m.l + (round / maxRound) * (W - m.l - m.r)
  const y = (v: number) => H - m.b - v * (H - m.t - m.b)
  const parts: string[] = []
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`)
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  parts.push(`<text x="${m.l}" y="18" font-size="13">${esc(title)}</text>`)
  for (let i = 0; i <= 4; i++) {
    const v = i / 4
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`)
    parts.push(`<text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${(v * 100).toFixed(0)}%</text>`)
  }
  for (let r = 0; r <= maxRound; r++) parts.push(`<text x="${x(r)}" y="${H - m.b + 16}" text-anchor="middle">${r}</text>`)
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 6}" text-anchor="middle">round</text>`)
  const line = (pts: [number, number][], color: string, dash: boolean) =>
    pts.length === 0
      ? ""
      : `<polyline fill="none" stroke="${color}" stroke-width="2"${dash ? ' stroke-dasharray="5,4"' : ""} points="${pts.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(" ")}"/>` +
        pts.map(([a, b]) => `<circle cx="${x(a).toFixed(1)}" cy="${y(b).toFixed(1)}" r="3" fill="${color}"/>`).join("")
  experts.forEach((ex, i) => {
    const c = COLORS[i % COLORS.length]!
    const mine = rows.filter((r) => r.expert === ex).sort((a, b) => a.round - b.round)
    const acc: [number, number][] = []
    const first = mine.find((r) => r.accBefore !== undefined)
    if (first) acc.push([first.round - 1, first.accBefore!])
    for (const r of mine) if (r.accAfter !== undefined) acc.push([r.round, r.accAfter])
    const rew: [number, number][] = mine.filter((r) => r.rewardMean !== undefined).map((r) => [r.round, r.rewardMean!])
    parts.push(line(acc, c, false), line(rew, c, true))
    parts.push(`<line x1="${W - m.r + 12}" x2="${W - m.r + 36}" y1="${m.t + 10 + i * 34}" y2="${m.t + 10 + i * 34}" stroke="${c}" stroke-width="2"/>`)
    parts.push(`<text x="${W - m.r + 42}" y="${m.t + 14 + i * 34}">${esc(ex)} held-out acc</text>`)
    parts.push(`<line x1="${W - m.r + 12}" x2="${W - m.r + 36}" y1="${m.t + 24 + i * 34}" y2="${m.t + 24 + i * 34}" stroke="${c}" stroke-width="2" stroke-dasharray="5,4"/>`)
    parts.push(`<text x="${W - m.r + 42}" y="${m.t + 28 + i * 34}">${esc(ex)} sample reward</text>`)
  })
  parts.push("</svg>")
  return parts.join("\n")
}
