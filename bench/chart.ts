/**
 * Hand-rolled SVG line charts for bench/REPORT.md: axes with ticks, one line per series with markers,
 * a legend, and optional dashed reference lines (goals, ceilings). No dependency, no fonts to embed.
 */

export interface Series {
  readonly name: string;
  readonly points: ReadonlyArray<readonly [number, number]>;
}

export interface LineChartOptions {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly Series[];
  /** Ticks on the x axis (also the only values labelled); default: nice ticks over the data. */
  readonly xTicks?: readonly number[];
  readonly xLog?: boolean;
  readonly yMin?: number;
  readonly yMax?: number;
  /** Horizontal dashed lines, e.g. a goal. */
  readonly references?: ReadonlyArray<{ readonly y: number; readonly label: string }>;
  readonly width?: number;
  readonly height?: number;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#17becf'];

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c] ?? c);
}

/** Ticks at 1, 2 or 5 × 10^k covering [lo, hi], about `count` of them. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 5, 10].find((m) => m * magnitude >= raw) ?? 10) * magnitude;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
    ticks.push(Math.round(v * 1e9) / 1e9);
  return ticks;
}

/** 1200 → "1.2k", 1000000 → "1M", 0.25 → "0.25". */
export function formatTick(value: number): string {
  const abs = Math.abs(value);
  const trim = (n: number) => String(Math.round(n * 100) / 100);
  if (abs >= 1e6) return `${trim(value / 1e6)}M`;
  if (abs >= 1e3) return `${trim(value / 1e3)}k`;
  return trim(value);
}

export function lineChart(o: LineChartOptions): string {
  const width = o.width ?? 520;
  const height = o.height ?? 340;
  const margin = { top: 34, right: 16, bottom: 46, left: 64 };
  const legendHeight = 18 * Math.ceil(o.series.length / 3);
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom - legendHeight;

  const xs = o.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = o.series.flatMap((s) => s.points.map((p) => p[1]));
  const refs = o.references ?? [];
  const xTicks = o.xTicks ?? niceTicks(Math.min(...xs), Math.max(...xs));
  const xLo = Math.min(...xs, ...xTicks);
  const xHi = Math.max(...xs, ...xTicks);
  const yLo = o.yMin ?? 0;
  const yTop = o.yMax ?? Math.max(...ys, ...refs.map((r) => r.y)) * 1.08;
  const yTicks = niceTicks(yLo, yTop);
  const yHi = Math.max(yTop, ...yTicks);

  const fx = (x: number): number => {
    const t = o.xLog
      ? (Math.log10(x) - Math.log10(xLo)) / (Math.log10(xHi) - Math.log10(xLo))
      : (x - xLo) / (xHi - xLo);
    return margin.left + (Number.isFinite(t) ? t : 0.5) * plotW;
  };
  const fy = (y: number): number => margin.top + plotH - ((y - yLo) / (yHi - yLo)) * plotH;
  const f = (n: number) => n.toFixed(1);

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="11">`,
    `<title>${escapeXml(o.title)}</title>`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(o.title)}</text>`,
  ];
  // Grid and ticks.
  for (const t of yTicks) {
    out.push(
      `<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${f(fy(t))}" y2="${f(fy(t))}" stroke="#e5e5e5"/>`,
      `<text x="${margin.left - 6}" y="${f(fy(t) + 4)}" text-anchor="end">${formatTick(t)}</text>`,
    );
  }
  for (const t of xTicks) {
    out.push(
      `<line x1="${f(fx(t))}" x2="${f(fx(t))}" y1="${margin.top + plotH}" y2="${margin.top + plotH + 5}" stroke="#333"/>`,
      `<text x="${f(fx(t))}" y="${margin.top + plotH + 18}" text-anchor="middle">${formatTick(t)}</text>`,
    );
  }
  // Axes and their labels.
  out.push(
    `<line x1="${margin.left}" x2="${margin.left}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#333"/>`,
    `<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${margin.top + plotH}" y2="${margin.top + plotH}" stroke="#333"/>`,
    `<text x="${margin.left + plotW / 2}" y="${margin.top + plotH + 36}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`,
    `<text transform="translate(16 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel)}</text>`,
  );
  for (const r of refs) {
    out.push(
      `<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${f(fy(r.y))}" y2="${f(fy(r.y))}" stroke="#555" stroke-dasharray="5 4"/>`,
      `<text x="${margin.left + plotW - 4}" y="${f(fy(r.y) - 4)}" text-anchor="end" fill="#555">${escapeXml(r.label)}</text>`,
    );
  }
  o.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const points = [...s.points].sort((a, b) => a[0] - b[0]);
    out.push(
      `<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.map(([x, y]) => `${f(fx(x))},${f(fy(y))}`).join(' ')}"/>`,
      ...points.map(([x, y]) => `<circle cx="${f(fx(x))}" cy="${f(fy(y))}" r="3" fill="${color}"/>`),
    );
    // Legend: three entries a row under the plot.
    const lx = margin.left + (i % 3) * (plotW / 3);
    const ly = height - legendHeight + 18 * Math.floor(i / 3) + 2;
    out.push(
      `<line x1="${f(lx)}" x2="${f(lx + 18)}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
      `<circle cx="${f(lx + 9)}" cy="${ly}" r="3" fill="${color}"/>`,
      `<text x="${f(lx + 24)}" y="${ly + 4}">${escapeXml(s.name)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n');
}

/** Charts side by side in one SVG (each chart keeps its own size). */
export function chartRow(charts: readonly string[]): string {
  const sizes = charts.map((c) => {
    const m = /width="(\d+)" height="(\d+)"/.exec(c);
    return { w: Number(m?.[1] ?? 0), h: Number(m?.[2] ?? 0) };
  });
  const width = sizes.reduce((sum, s) => sum + s.w, 0);
  const height = Math.max(...sizes.map((s) => s.h));
  let x = 0;
  const parts = charts.map((c, i) => {
    const placed = c.replace('<svg ', `<svg x="${x}" y="0" `);
    x += sizes[i]?.w ?? 0;
    return placed;
  });
  const titles = charts.map((c) => /<title>(.*?)<\/title>/.exec(c)?.[1] ?? '').filter(Boolean);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<title>${titles.join('; ')}</title>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
