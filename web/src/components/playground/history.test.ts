import { beforeEach, describe, expect, it } from 'vitest'
import { DEFAULT_SETTINGS, loadChat, saveChat } from './history'

/** localStorage as a browser has it, with a quota (bytes of values) to run into. */
class Storage {
  items = new Map<string, string>()
  constructor(private quota = Infinity) {}
  getItem(k: string) {
    return this.items.get(k) ?? null
  }
  setItem(k: string, v: string) {
    const used = [...this.items].reduce((n, [key, val]) => n + (key === k ? 0 : val.length), 0)
    if (used + v.length > this.quota) throw new DOMException('quota', 'QuotaExceededError')
    this.items.set(k, v)
  }
  removeItem(k: string) {
    this.items.delete(k)
  }
}

describe('chat history', () => {
  beforeEach(() => {
    ;(globalThis as any).localStorage = new Storage()
  })

  it('one conversation and its settings per model, read back as saved', () => {
    const settings = { ...DEFAULT_SETTINGS, system: 'be brief', temperature: 0.2 }
    saveChat('a', { messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo', tokens: 2, ttft: 120 }], settings })
    expect(loadChat('a')).toEqual({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo', tokens: 2, ttft: 120 }], settings })
    expect(loadChat('b')).toEqual({ messages: [], settings: DEFAULT_SETTINGS })
  })

  it('something unreadable or of another shape starts afresh, keeping what is valid', () => {
    localStorage.setItem('llamastudio.chat.x', '{not json')
    expect(loadChat('x').messages).toEqual([])
    localStorage.setItem('llamastudio.chat.y', JSON.stringify({ messages: [{ role: 'system', content: 'x' }, { role: 'user', content: 'ok' }, { role: 'user' }], settings: { max_tokens: 64 } }))
    expect(loadChat('y')).toEqual({ messages: [{ role: 'user', content: 'ok' }], settings: { ...DEFAULT_SETTINGS, max_tokens: 64 } })
  })

  it('over the quota, images are dropped from the stored copy, never the text', () => {
    ;(globalThis as any).localStorage = new Storage(400)
    const image = 'data:image/png;base64,' + 'A'.repeat(1000)
    saveChat('v', { messages: [{ role: 'user', content: 'what is this?', image }], settings: DEFAULT_SETTINGS })
    expect(loadChat('v').messages).toEqual([{ role: 'user', content: 'what is this?' }])
  })
})
