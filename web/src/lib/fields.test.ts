import { describe, expect, it } from 'vitest'
import { check, field, FIELDS, lacks, readField, writeField } from './fields'

describe('named fields read and write the argv list', () => {
  it('reads numbers, choices and layers from any spelling', () => {
    const argv = ['--ctx-size', '8192', '--flash-attn', 'on', '-ngl', 'all', '--temperature', '0.7']
    expect(readField(argv, field('ctx'))).toBe(8192)
    expect(readField(argv, field('fa'))).toBe('on')
    expect(readField(argv, field('ngl'))).toBe('all')
    expect(readField(argv, field('temp'))).toBe(0.7)
    expect(readField(argv, field('topk'))).toBeNull()
    expect(readField(['-c', 'lots'], field('ctx'))).toBeNull()
  })
  it('writes the first spelling in place and removes on empty', () => {
    expect(writeField(['--ctx-size', '2048', '-np', '1'], field('ctx'), 4096)).toEqual(['-c', '4096', '-np', '1'])
    expect(writeField(['-np', '1'], field('temp'), 0.25)).toEqual(['-np', '1', '--temp', '0.25'])
    expect(writeField(['-fa', 'on', '-np', '1'], field('fa'), '')).toEqual(['-np', '1'])
    expect(writeField(['-ctk', 'q8_0'], field('ctk'), null)).toEqual([])
    expect(writeField([], field('ropeScaling'), 'yarn')).toEqual(['--rope-scaling', 'yarn'])
  })
  it('covers every setting the issue names', () => {
    const flags = FIELDS.map((f) => f.names[0])
    for (const f of ['-c', '-ngl', '-b', '-ub', '-np', '-fa', '-ctk', '-ctv', '-t', '--temp', '--top-k', '--top-p', '--min-p', '--repeat-penalty', '--rope-scaling', '--rope-scale', '--rope-freq-base', '--yarn-orig-ctx'])
      expect(flags).toContain(f)
  })
})

describe('engine capabilities', () => {
  it('disables a field whose flag the engine lacks, with why', () => {
    expect(lacks(['--rope-scaling'], ['-c', '--ctx-size'], 'old-build')).toBe('old-build has no --rope-scaling')
    expect(lacks(['-c', '--ctx-size'], ['--ctx-size'])).toBeNull() // any spelling will do
    expect(lacks(['--temp'], [])).toBeNull() // flags not known: nothing is disabled
    expect(lacks(['--temp'], null)).toBeNull()
  })
})

describe('checks', () => {
  it('caps the context at the trained one unless overridden, then warns unless RoPE scaling extends it', () => {
    expect(check(['-c', '8192'], field('ctx'), 4096)?.level).toBe('error')
    expect(check(['-c', '2000000'], field('ctx'), 32768)?.text).toMatch(/above the trained 32,768/)
    expect(check(['-c', '8192', '--rope-scaling', 'yarn'], field('ctx'), 4096)?.level).toBe('error')
    expect(check(['-c', '8192'], field('ctx'), 4096, true)?.level).toBe('warn')
    expect(check(['-c', '8192'], field('ctx'), 4096, true)?.text).toMatch(/4,096/)
    expect(check(['-c', '8192'], field('ctx'), 4096, true)?.detail).toMatch(/RoPE\/YaRN/)
    expect(check(['-c', '4096'], field('ctx'), 4096)).toBeNull()
    expect(check(['-c', '0'], field('ctx'), 4096)).toBeNull()
    expect(check(['-c', '8192', '--rope-scaling', 'yarn'], field('ctx'), 4096, true)).toBeNull()
    expect(check(['-c', '8192', '--rope-scaling', 'none'], field('ctx'), 4096, true)?.level).toBe('warn')
    expect(check(['-c', '8192'], field('ctx'), null)).toBeNull()
  })
  it('refuses what llama-server refuses', () => {
    expect(check(['-c', '1.5'], field('ctx'), null)?.level).toBe('error')
    expect(check(['-ngl', 'most'], field('ngl'), null)?.level).toBe('error')
    expect(check(['-ngl', '20'], field('ngl'), null)).toBeNull()
    expect(check(['-fa', 'maybe'], field('fa'), null)?.level).toBe('error')
    expect(check(['--top-p', '1.5'], field('topp'), null)?.text).toBe('at most 1')
    expect(check(['-ctv', 'q8_0', '-fa', 'off'], field('ctv'), null)?.text).toMatch(/flash attention/)
    expect(check(['-ctv', 'q8_0', '-fa', 'on'], field('ctv'), null)).toBeNull()
  })
})
