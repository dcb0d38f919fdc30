import { describe, expect, it } from 'vitest'
import { stacked } from './memory'

const MiB = 1 << 20

describe('stacked memory bar', () => {
  it('an estimate: its parts, nothing above, no marker', () => {
    const bar = stacked({ model: 60 * MiB, kv: 40 * MiB, rs: 0 }, 100 * MiB, 1000 * MiB)
    expect(bar.segments.map((s) => [s.key, s.width])).toEqual([['model', 6], ['kv', 4]])
    expect(bar.above).toBeNull()
    expect(bar.marker).toBeNull()
  })
  it('a measured reservation above the estimate: the difference is its own segment', () => {
    const bar = stacked({ model: 60 * MiB, kv: 40 * MiB }, 150 * MiB, 1000 * MiB, 'measured beyond the estimate')
    expect(bar.above).toMatchObject({ bytes: 50 * MiB, width: 5, label: 'measured beyond the estimate' })
    expect(bar.marker).toBeNull()
  })
  it('a reservation below the estimate: a marker where it ends', () => {
    const bar = stacked({ model: 60 * MiB, kv: 40 * MiB }, 50 * MiB, 1000 * MiB)
    expect(bar.above).toBeNull()
    expect(bar.marker).toBe(5)
  })
  it('within half a percent is the same figure; more than the device has fills the bar', () => {
    expect(stacked({ model: 1000 * MiB }, 1004 * MiB, 4000 * MiB).above).toBeNull()
    const over = stacked({ model: 3000 * MiB }, 3000 * MiB, 1000 * MiB)
    expect(over.segments[0].width).toBe(100)
  })
})
