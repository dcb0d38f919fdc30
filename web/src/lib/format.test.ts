import { describe, expect, it } from 'vitest'
import { formatBytes, formatCount, formatDuration, formatMs, percent } from './format'

describe('format', () => {
  it('bytes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B')
    expect(formatBytes(1536)).toBe('1.5 KiB')
    expect(formatBytes(24 * 1024 ** 3)).toBe('24.0 GiB')
    expect(formatBytes(undefined)).toBe('—')
  })
  it('durations', () => {
    expect(formatDuration(5)).toBe('5s')
    expect(formatDuration(125)).toBe('2m 05s')
    expect(formatDuration(3 * 3600 + 60)).toBe('3h 01m')
    expect(formatDuration(null)).toBe('—')
  })
  it('counts and percent', () => {
    expect(formatCount(1234567)).toBe('1.2M')
    expect(percent(5, 0)).toBe(0)
    expect(percent(150, 100)).toBe(100)
  })
  it('milliseconds', () => {
    expect(formatMs(null)).toBe('—')
    expect(formatMs(12.4)).toBe('12 ms')
    expect(formatMs(1250)).toBe('1.25 s')
    expect(formatMs(65_000)).toBe('65.0 s')
  })
})
