import { describe, expect, it } from 'vitest'
import { getFlag, hasSwitch, joinArgs, parseArgs, setFlag, setSwitch, splitArgs } from './args'

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
  it('says where the unclosed quote opened, and parseArgs reports it instead of an empty list', () => {
    expect(parseArgs(`-c 512 --alias 'my model`)).toEqual({ args: null, error: expect.stringMatching(/^unclosed ' quote \(opened at character 16\)/) })
    expect(parseArgs(`--chat-template "{{x}}`).error).toMatch(/unclosed " quote \(opened at character 17\)/)
    expect(parseArgs(`-c 512 --alias 'my model'`)).toEqual({ args: ['-c', '512', '--alias', 'my model'], error: null })
    expect(parseArgs(`it\\'s`)).toEqual({ args: ["it's"], error: null }) // an escaped quote opens nothing
    expect(parseArgs('')).toEqual({ args: [], error: null })
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

describe('values that look like flags', () => {
  it('never reads a flag value as a flag', () => {
    // a chat template or a path may be "-c": it is the value of the flag before it
    const argv = ['--chat-template', '-c', '-np', '2']
    expect(getFlag(argv, ['-c', '--ctx-size'])).toBeUndefined()
    expect(getFlag(argv, ['-np'])).toBe('2')
    expect(setFlag(argv, ['-c', '--ctx-size'], '512')).toEqual(['--chat-template', '-c', '-np', '2', '-c', '512'])
  })
  it('keeps unknown flags and their values in place', () => {
    expect(setFlag(['--jinja', '-ot', 'exps=CPU', '-c', '1'], ['-c'], '2')).toEqual(['--jinja', '-ot', 'exps=CPU', '-c', '2'])
  })
})

describe('hasSwitch / setSwitch', () => {
  const off = ['--no-mmproj-offload']
  it('adds once, removes every spelling', () => {
    expect(hasSwitch(['-c', '8', '--no-mmproj-offload'], off)).toBe(true)
    expect(hasSwitch(['--alias', '--no-mmproj-offload'], off)).toBe(false) // a value, not the flag
    expect(setSwitch(['-c', '8'], off, true)).toEqual(['-c', '8', '--no-mmproj-offload'])
    expect(setSwitch(['-c', '8', '--no-mmproj-offload'], off, true)).toEqual(['-c', '8', '--no-mmproj-offload'])
    expect(setSwitch(['--no-mmproj', '-c', '8', '--no-mmproj-auto'], ['--no-mmproj', '--no-mmproj-auto'], false)).toEqual(['-c', '8'])
  })
})
