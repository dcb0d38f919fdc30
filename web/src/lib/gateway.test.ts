import { describe, expect, it } from 'vitest'
import { cosine, sseData } from './gateway'

function stream(chunks: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder()
  return new ReadableStream({
    start(c) {
      for (const s of chunks) c.enqueue(enc.encode(s))
      c.close()
    },
  })
}
async function collect(chunks: string[]) {
  const out: Record<string, any>[] = []
  for await (const d of sseData(stream(chunks))) out.push(d)
  return out
}

describe('sseData', () => {
  it('joins events split across chunks and stops at [DONE]', async () => {
    const got = await collect(['data: {"choices":[{"text":"Hel', 'lo"}]}\n\ndata: {"choices":[{"text":" you"}]}\r\n', '\ndata: [DONE]\n\ndata: {"x":1}\n'])
    expect(got.map((d) => d.choices[0].text)).toEqual(['Hello', ' you'])
  })
  it('reads a last event without a trailing newline', async () => {
    expect(await collect(['data: {"a":1}'])).toEqual([{ a: 1 }])
  })
  it('throws on an error event', async () => {
    await expect(collect(['data: {"error":{"message":"model is an embedding model"}}\n'])).rejects.toThrow(/embedding model/)
  })
})

describe('cosine', () => {
  it('is 1 for the same direction, 0 for orthogonal or zero vectors', () => {
    expect(cosine([1, 2], [2, 4])).toBeCloseTo(1)
    expect(cosine([1, 0], [0, 3])).toBe(0)
    expect(cosine([0, 0], [1, 1])).toBe(0)
  })
})
