/** The estimator's memory categories (`parts` of a device in a prepared configuration's
 * `estimate`), named and coloured for the stacked memory bar; the order is the bar's. */
export const PARTS: { key: string; label: string; color: string }[] = [
  { key: 'model', label: 'weights', color: '#3b82f6' },
  { key: 'kv', label: 'KV cache', color: '#22c55e' },
  { key: 'rs', label: 'recurrent state', color: '#14b8a6' },
  { key: 'output', label: 'output', color: '#a855f7' },
  { key: 'compute', label: 'compute', color: '#f59e0b' },
  { key: 'mmproj', label: 'projector (vision)', color: '#ec4899' },
  { key: 'draft', label: 'draft model', color: '#64748b' },
]

export interface Segment {
  key: string
  label: string
  color: string
  bytes: number
  width: number // percent of the bar
}

export interface Stacked {
  segments: Segment[]
  /** bytes of the reservation above the parts' sum: a hatched segment after them */
  above: Segment | null
  /** where the reservation ends, percent of the bar, when it is below the parts' sum */
  marker: number | null
  sum: number
}

const SAME = 0.005 // a reservation within 0.5 % of the parts' sum is that sum

/** The stacked bar of `parts` (bytes by category) against `total`. The reservation `used` is
 * their sum for an estimate; a measured or hand-set reservation differs: the bytes above the
 * sum are one more segment, a reservation below it is a marker where it ends. */
export function stacked(parts: Record<string, number>, used: number, total: number, above = 'beyond the estimate'): Stacked {
  const sum = PARTS.reduce((n, p) => n + Math.max(0, parts[p.key] ?? 0), 0)
  const whole = Math.max(total, used, sum)
  const width = (bytes: number) => (whole > 0 ? Math.min(100, (100 * bytes) / whole) : 0)
  const segments = PARTS.filter((p) => (parts[p.key] ?? 0) > 0).map((p) => ({ ...p, bytes: parts[p.key], width: width(parts[p.key]) }))
  const near = Math.abs(used - sum) <= SAME * Math.max(used, sum)
  return {
    segments,
    above: near || used < sum ? null : { key: 'above', label: above, color: '', bytes: used - sum, width: width(used - sum) },
    marker: near || used > sum ? null : width(used),
    sum,
  }
}
