/** What a model's memory reservation is based on (`prepared.memory` of a configuration view):
 * the estimate, what llama-server allocated at a load of the same key (measured), or the
 * configuration's own `reserve` (set by hand); and the per-device summary lines with their drift. */
import type { MemoryView } from '../api/types'

export type Source = MemoryView['source']

/** |estimated − measured| / measured above this is a drift (the studio's DRIFT_LIMIT). */
export const DRIFT_LIMIT = 0.05

export interface Basis {
  source: Source
  label: string
  severity: 'secondary' | 'success' | 'info'
  tip: string
}

const KEY = 'the same model file, engine build, memory flags and devices'

/** The badge for a reservation. `memory` is null where the engine kind is not measured (not
 * llama.cpp, or a remote file); `manual`: the configuration sets its own `reserve`. */
export function basisOf(memory: MemoryView | null | undefined, manual = false): Basis {
  const source: Source = memory?.source ?? (manual ? 'manual' : 'estimate')
  if (source === 'manual')
    return {
      source,
      label: 'set by hand',
      severity: 'info',
      tip: 'This configuration reserves its own figure (reserve); the estimate and any measurement are shown for comparison.',
    }
  if (source === 'measured' && memory) {
    const at = memory.measured_at ? new Date(memory.measured_at) : null
    const loads = memory.loads === 1 ? '1 load' : `${memory.loads} loads`
    return {
      source,
      label: at ? `measured on ${dateOf(memory.measured_at!)}` : 'measured',
      severity: 'success',
      tip: `Reserved from what llama-server allocated at a load of ${KEY} (${loads}${at ? `, measured ${at.toLocaleString()}` : ''}), not from the estimate.`,
    }
  }
  let tip = 'Reserved from the estimate.'
  if (memory && memory.comparable === false) tip += ` A measured load is not used: ${memory.note ?? 'it is not comparable'}.`
  else if (memory) tip += ` The first load of ${KEY} is measured; later placements reserve the measured figure.`
  return { source: 'estimate', label: 'estimated', severity: 'secondary', tip }
}

/** `2026-11-23` of an ISO 8601 time: the UTC date, as the summary lines write it. */
export function dateOf(iso: string): string {
  return iso.slice(0, 10)
}

export interface SummaryLine {
  device: string
  text: string
  /** the line split around its drift, `(−50.0 %)`, so that the drift alone is highlighted */
  before: string
  drift: string
  after: string
  /** low: the estimate was too low (drift < −5 %); high: too high (> +5 %); null: within */
  tone: 'low' | 'high' | null
}

const DRIFT = /\([+-][\d.,]+ %\)/

/** The summary lines (`CPU: estimated 19.3 MiB, measured 38.6 MiB on 2026-11-23 (-50.0 %)`),
 * each with its device's drift beyond ±5 % marked. The tone comes from `drift`, not the text. */
export function summaryOf(memory: MemoryView | null | undefined): SummaryLine[] {
  return (memory?.summary ?? []).map((text) => {
    const device = text.split(':', 1)[0]
    const r = memory?.drift[device]
    const tone = r === undefined || Math.abs(r) <= DRIFT_LIMIT ? null : r < 0 ? 'low' : 'high'
    const m = DRIFT.exec(text)
    if (!m) return { device, text, before: text, drift: '', after: '', tone }
    return { device, text, before: text.slice(0, m.index), drift: m[0], after: text.slice(m.index + m[0].length), tone }
  })
}

/** What a drift means, for its tooltip. */
export function driftTip(tone: SummaryLine['tone'], source: Source): string {
  if (!tone) return ''
  const what = tone === 'low' ? 'too low: a load needs more than estimated' : 'too high: a load needs less than estimated'
  return `The estimate is ${what}.${source === 'measured' ? ' The measured figure is reserved.' : ''}`
}
