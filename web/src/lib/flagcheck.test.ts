import { describe, expect, it } from 'vitest'
import { checkFlags, isFlag } from './flagcheck'

const CAPS = ['-c', '--ctx-size', '-np', '--parallel', '--jinja', '-fa', '--flash-attn', '-ctk', '--temp', '--top-k', '--alias', '-a', '-ngl', '-lm']

describe('checkFlags', () => {
  it('passes a line the engine reads', () => {
    expect(checkFlags(['-c', '512', '-np', '-1', '--jinja', '--temp', '0.7', '-fa', 'on', '--alias', '-weird-name'], CAPS)).toEqual([])
    expect(checkFlags(['--ctx-size=1024', '--flash-attn=on'], CAPS)).toEqual([]) // modelled: re-spelled
    expect(checkFlags(['--no-mmap', '-ngl', 'all'], CAPS)).toEqual([]) // the studio re-spells --no-mmap as -lm none
  })
  it('refuses a flag the engine lacks, in the engine’s own words', () => {
    expect(checkFlags(['-c', '512', '--bogus-flag'], CAPS)).toEqual([
      { flag: '--bogus-flag', text: expect.stringMatching(/not a flag of this engine/), engineSays: 'error: invalid argument: --bogus-flag' },
    ])
    expect(checkFlags(['--bogus=3'], CAPS)[0].flag).toBe('--bogus')
    expect(checkFlags(['--bogus-flag'], null)).toEqual([]) // no capabilities known: nothing to check against
  })
  it('refuses --flag=value where the engine gets it as given (llama-server reads no such form)', () => {
    expect(checkFlags(['--top-k=20'], CAPS)).toEqual([
      { flag: '--top-k', text: 'llama-server reads no --top-k=VALUE: write --top-k 20', engineSays: 'error: invalid argument: --top-k=20' },
    ])
  })
  it('refuses a missing value, a bad number and a value outside the set', () => {
    expect(checkFlags(['-c'], CAPS)[0].engineSays).toBe('error while handling argument "-c": expected value for argument')
    expect(checkFlags(['-c', '--jinja'], CAPS)[0].text).toBe('-c needs a value')
    expect(checkFlags(['--top-k', 'x'], CAPS)[0].engineSays).toBe('error while handling argument "--top-k": stoi')
    expect(checkFlags(['--temp', 'warm'], CAPS)[0].engineSays).toBe('error while handling argument "--temp": stof')
    expect(checkFlags(['-fa', 'maybe'], CAPS)[0].engineSays).toBe(`error while handling argument "-fa": error: unknown value for --flash-attn: 'maybe'`)
    expect(checkFlags(['-ctk', 'q9'], CAPS)[0].engineSays).toBe('error while handling argument "-ctk": Unsupported cache type: q9')
  })
  it('reads a negative number as a value', () => {
    expect(isFlag('-1')).toBe(false)
    expect(isFlag('-.5')).toBe(false)
    expect(isFlag('-c')).toBe(true)
    expect(isFlag('-')).toBe(false)
  })
})
