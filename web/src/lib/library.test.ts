import { describe, expect, it } from 'vitest'
import type { Stats } from '../api/types'
import { bestFit, fitOf, groupByRepo } from './library'

const GiB = 1024 ** 3
const stats = (gpus: Stats['gpus'] = []): Stats => ({ t: 0, cpu_percent: 0, cpu_count: 2, ram_total: 16 * GiB, ram_used: 0, disk_total: 0, disk_used: 0, gpus })
const gpu = { index: 0, name: 'RTX', device: 'CUDA0', total: 8 * GiB, used: 0, utilization_pct: null, temperature_c: null }

describe('fitOf', () => {
  it('says where a reservation fits', () => {
    expect(fitOf({ CPU: 2 * GiB }, stats()).level).toBe('cpu')
    expect(fitOf({ CPU: 2 * GiB }, stats()).tip).toBe('reserves CPU: 2.0 GiB of 16.0 GiB')
    expect(fitOf({ CUDA0: 6 * GiB, CPU: GiB }, stats([gpu])).level).toBe('gpu')
    expect(fitOf({ CUDA0: 9 * GiB }, stats([gpu])).level).toBe('no')
    expect(fitOf({ CPU: 20 * GiB }, stats()).label).toBe("doesn't fit")
    expect(fitOf({ CUDA0: GiB }, stats()).level).toBe('no') // a GPU this machine lacks
    expect(fitOf({}, stats()).level).toBe('unknown')
    expect(fitOf({ CPU: GiB }, null).level).toBe('unknown')
  })
  it('a group shows its best quant', () => {
    expect(bestFit([fitOf({ CPU: 20 * GiB }, stats()), fitOf({ CPU: GiB }, stats())])?.level).toBe('cpu')
    expect(bestFit([])).toBeNull()
  })
})

describe('groupByRepo', () => {
  it('puts the quants of one repo in one group and a model without a repo alone', () => {
    const rows = [
      { name: 'org/A:Q8_0', repo: 'org/A', size: 8 },
      { name: 'mine', repo: null, size: 1 },
      { name: 'org/A:Q4_K_M', repo: 'org/A', size: 4 },
      { name: 'other', repo: null, size: 2 },
    ]
    const groups = groupByRepo(rows, (r) => r.repo, (r) => r.size)
    expect(groups.map((g) => [g.key, g.items.map((i) => i.name), g.size])).toEqual([
      ['org/A', ['org/A:Q8_0', 'org/A:Q4_K_M'], 12],
      ['mine', ['mine'], 1],
      ['other', ['other'], 2],
    ])
  })
})
