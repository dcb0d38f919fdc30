import { describe, expect, it } from 'vitest'
import { describeTtl, MAX_TTL, parseTtl } from './ttl'

describe('parseTtl', () => {
  it('reads empty as the default and numbers as seconds', () => {
    expect(parseTtl('')).toEqual({ value: null, error: null })
    expect(parseTtl('  ')).toEqual({ value: null, error: null })
    expect(parseTtl('300')).toEqual({ value: 300, error: null })
    expect(parseTtl('0')).toEqual({ value: 0, error: null })
    expect(parseTtl('1.5')).toEqual({ value: 1.5, error: null })
  })
  it('refuses negative, non-numeric and too large values', () => {
    expect(parseTtl('-1').error).toMatch(/at least 0/)
    expect(parseTtl('abc').error).toMatch(/not a number/)
    expect(parseTtl('5m').error).toMatch(/not a number/)
    expect(parseTtl(String(MAX_TTL + 1)).error).toMatch(/at most/)
  })
})

describe('describeTtl', () => {
  it('says what the default is', () => {
    expect(describeTtl(null, 0)).toBe('the default (never unloaded)')
    expect(describeTtl(null, 600)).toBe('the default (unloaded after 600 s idle)')
    expect(describeTtl(null, null)).toBe('the default')
    expect(describeTtl(30, 0)).toBe('unloaded after 30 s idle')
  })
})
