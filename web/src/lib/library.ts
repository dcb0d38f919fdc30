/**
 * The Library as groups: every quantization of one Hub repo under that repo (one row, expandable),
 * a model without a repo (a file added by path, a command) a group of its own. Each model carries
 * a fit badge: its reservation (`memory` in `/api/served`, per device, what starting it reserves)
 * against each device's total memory (`/ws` stats: RAM and each GPU's).
 */
import type { Stats } from '../api/types'
import { formatBytes } from './format'

export interface Fit {
  level: 'gpu' | 'cpu' | 'no' | 'unknown'
  label: string
  severity: 'success' | 'info' | 'danger' | 'secondary'
  tip: string
}

/** Whether a reservation (bytes per device) fits each device's total memory. */
export function fitOf(memory: Record<string, number> | null | undefined, stats: Stats | null | undefined): Fit {
  const entries = Object.entries(memory ?? {}).filter(([, b]) => b > 0)
  if (!entries.length || !stats) return { level: 'unknown', label: '—', severity: 'secondary', tip: 'not estimated yet' }
  const totals: Record<string, number> = { CPU: stats.ram_total }
  for (const g of stats.gpus) totals[g.device] = g.total
  const lines: string[] = []
  let over = false
  for (const [dev, bytes] of entries) {
    const total = totals[dev]
    if (total === undefined || bytes > total) over = true
    lines.push(`${dev}: ${formatBytes(bytes)} of ${total === undefined ? 'a device this machine lacks' : formatBytes(total)}`)
  }
  const tip = `reserves ${lines.join('; ')}`
  if (over) return { level: 'no', label: "doesn't fit", severity: 'danger', tip }
  const onGpu = entries.some(([dev]) => dev !== 'CPU')
  return onGpu ? { level: 'gpu', label: 'fits on GPU', severity: 'success', tip } : { level: 'cpu', label: 'fits (CPU)', severity: 'info', tip }
}

export interface Grouped<T> {
  key: string // the repo, or the model's own name
  repo: string | null
  items: T[]
  size: number
}

/** ``rows`` grouped by repo (in first-seen order; a group's items in the given order). */
export function groupByRepo<T extends { name: string }>(rows: T[], repoOf: (r: T) => string | null | undefined, sizeOf: (r: T) => number): Grouped<T>[] {
  const groups = new Map<string, Grouped<T>>()
  for (const r of rows) {
    const repo = repoOf(r) ?? null
    const key = repo ?? `\0${r.name}`
    const g = groups.get(key) ?? { key: repo ?? r.name, repo, items: [], size: 0 }
    g.items.push(r)
    g.size += sizeOf(r)
    groups.set(key, g)
  }
  return [...groups.values()]
}

/** The better of two fits (a group shows its best quant's). */
export function bestFit(fits: Fit[]): Fit | null {
  const order = ['gpu', 'cpu', 'no', 'unknown']
  return [...fits].sort((a, b) => order.indexOf(a.level) - order.indexOf(b.level))[0] ?? null
}

/** Trigger a download of ``text`` as a file named ``name``. */
export function download(name: string, text: string, type = 'text/plain'): void {
  const url = URL.createObjectURL(new Blob([text], { type }))
  const a = document.createElement('a')
  a.href = url
  a.download = name
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 1000)
}
