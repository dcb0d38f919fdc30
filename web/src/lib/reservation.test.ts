import { describe, expect, it } from 'vitest'
import type { MemoryView } from '../api/types'
import { basisOf, driftTip, summaryOf } from './reservation'

const MiB = 1 << 20

function view(over: Partial<MemoryView>): MemoryView {
  return {
    key: 'k',
    source: 'estimate',
    estimated: { CPU: 20 * MiB },
    measured: null,
    process: {},
    measured_at: null,
    loads: 0,
    comparable: null,
    note: null,
    drift: {},
    summary: ['CPU: estimated 20.0 MiB, not measured yet'],
    ...over,
  }
}

const measured = view({
  source: 'measured',
  measured: { CPU: 40 * MiB, CUDA0: 100 * MiB },
  measured_at: '2026-11-23T15:04:05+00:00',
  loads: 2,
  comparable: true,
  drift: { CPU: -0.5, CUDA0: 0.03 },
  summary: [
    'CUDA0: estimated 103.0 MiB, measured 100.0 MiB on 2026-11-23 (+3.0 %); the process held 180.0 MiB (NVML)',
    'CPU: estimated 20.0 MiB, measured 40.0 MiB on 2026-11-23 (-50.0 %)',
  ],
})

describe('what a reservation is based on', () => {
  it('the estimate, before any load of the key', () => {
    const b = basisOf(view({}))
    expect(b.label).toBe('estimated')
    expect(b.tip).toContain('first load')
  })
  it('the measured figure, with the date the summary writes', () => {
    const b = basisOf(measured)
    expect(b).toMatchObject({ source: 'measured', label: 'measured on 2026-11-23', severity: 'success' })
    expect(b.tip).toContain('2 loads')
  })
  it('a measurement --fit changed is not used: estimated, with why', () => {
    const b = basisOf(view({ comparable: false, note: "llama.cpp's --fit changed the parameters", measured: { CPU: 1 } }))
    expect(b.label).toBe('estimated')
    expect(b.tip).toContain('--fit changed')
  })
  it('set by hand: from the memory view, or from the config where nothing is measured', () => {
    expect(basisOf(view({ source: 'manual' })).label).toBe('set by hand')
    expect(basisOf(null, true).label).toBe('set by hand')
    expect(basisOf(null).label).toBe('estimated')
  })
})

describe('summary lines', () => {
  it('a drift beyond 5 % is marked by its sign; the line is split around it', () => {
    const [gpu, cpu] = summaryOf(measured)
    expect(gpu).toMatchObject({ device: 'CUDA0', tone: null, drift: '(+3.0 %)' })
    expect(gpu.after).toContain('NVML')
    expect(cpu).toMatchObject({ device: 'CPU', tone: 'low', drift: '(-50.0 %)', after: '' })
    expect(cpu.before + cpu.drift + cpu.after).toBe(measured.summary[1])
    const high = summaryOf(view({ drift: { CPU: 0.2 }, summary: ['CPU: estimated 12.0 MiB, measured 10.0 MiB (+20.0 %)'] }))
    expect(high[0].tone).toBe('high')
  })
  it('a line without a measurement has no drift', () => {
    expect(summaryOf(view({}))).toEqual([
      { device: 'CPU', text: 'CPU: estimated 20.0 MiB, not measured yet', before: 'CPU: estimated 20.0 MiB, not measured yet', drift: '', after: '', tone: null },
    ])
    expect(summaryOf(null)).toEqual([])
  })
  it('the tooltip says which way the estimate was off', () => {
    expect(driftTip('low', 'measured')).toContain('too low')
    expect(driftTip('high', 'manual')).not.toContain('measured figure is reserved')
    expect(driftTip(null, 'measured')).toBe('')
  })
})
