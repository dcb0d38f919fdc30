import { describe, expect, it } from 'vitest'
import { getFlag, joinArgs, setFlag, splitArgs } from './args'

describe('splitArgs / joinArgs', () => {
  it('splits like a shell', () => {
    expect(splitArgs(`-c 4096  --jinja -ot "blk\\.(1|2)\\.ffn=CPU" --alias 'my model'`)).toEqual([
      '-c', '4096', '--jinja', '-ot', 'blk\\.(1|2)\\.ffn=CPU', '--alias', 'my model',
    ])
    expect(splitArgs('')).toEqual([])
    expect(splitArgs(`a '' b`)).toEqual(['a', '', 'b'])
  })
  it('refuses an unclosed quote', () => {
    expect(() => splitArgs(`--alias "x`)).toThrow(/unclosed/)
  })
  it('round-trips through joinArgs', () => {
    const argv = ['-c', '8192', '--chat-template-kwargs', '{"enable_thinking": false}', "it's", '', '${PORT}']
    expect(splitArgs(joinArgs(argv))).toEqual(argv)
    expect(joinArgs(['-c', '512'])).toBe('-c 512')
  })
})

describe('getFlag / setFlag', () => {
  const ctx = ['-c', '--ctx-size']
  it('reads any spelling', () => {
    expect(getFlag(['--ctx-size', '2048'], ctx)).toBe('2048')
    expect(getFlag(['--ctx-size=1024'], ctx)).toBe('1024')
    expect(getFlag(['-np', '2'], ctx)).toBeUndefined()
  })
  it('replaces, adds and removes', () => {
    expect(setFlag(['-np', '2', '--ctx-size', '2048'], ctx, '8192')).toEqual(['-np', '2', '-c', '8192'])
    expect(setFlag(['-np', '2'], ctx, '512')).toEqual(['-np', '2', '-c', '512'])
    expect(setFlag(['-c', '512', '--jinja'], ctx, null)).toEqual(['--jinja'])
    expect(setFlag(['--ctx-size=9', '-c', '3'], ctx, '7')).toEqual(['-c', '7'])
  })
})
