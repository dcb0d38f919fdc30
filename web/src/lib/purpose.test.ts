import { describe, expect, it } from 'vitest'
import type { LocalModel, ModelTraits } from '../api/types'
import { badges, playMode, purposeOf } from './purpose'

const local = (facts: LocalModel['facts'], mmproj: string[] = []): LocalModel => ({
  id: 'm', path: '/m.gguf', files: [], size: 1, quant: 'Q4_0', source: 'added', repo: null, mmproj, facts,
})
const traits = (t: Partial<ModelTraits>): ModelTraits => ({
  role: 'chat', vision: null, chat_template: null, template_family: null, tools: false, draft: null, ...t,
})
const keys = (l: LocalModel | null, t?: ModelTraits) => badges(purposeOf(l, t)).map((b) => b.key)

describe('purpose', () => {
  it('marks a base model, and the playground completes for it', () => {
    const p = purposeOf(local({ role: 'chat', chat_template: false }), traits({ vision: false, chat_template: false }))
    expect(playMode(p)).toBe('completion')
    const tag = badges(p).find((b) => b.key === 'no-template')
    expect(tag?.severity).toBe('warn')
    expect(tag?.tip).toMatch(/base model/)
    expect(tag?.tip).toMatch(/completions/)
  })
  it('reads the file before the model is prepared', () => {
    expect(keys(local({ role: 'chat', chat_template: true, template_family: 'chatml' }, ['/mmproj.gguf']), traits({}))).toEqual(['vision', 'template'])
    expect(keys(local({ role: 'embedding', chat_template: false }), traits({}))).toEqual(['embedding'])
    expect(playMode(purposeOf(local({ role: 'rerank' }), traits({})))).toBe('rerank')
  })
  it('prepared traits win: a projector switched off, a template set by hand', () => {
    const off = badges(purposeOf(local({ chat_template: true }, ['/mmproj.gguf']), traits({ vision: false, chat_template: true })))
    expect(off.map((b) => b.label)).toEqual(['vision off'])
    const set = purposeOf(local({ chat_template: false }), traits({ vision: false, chat_template: true }))
    expect(set.templateSet).toBe(true)
    expect(playMode(set)).toBe('chat')
  })
  it('an embedding or rerank model never gets the no-template warning', () => {
    expect(keys(null, traits({ role: 'embedding', vision: false }))).toEqual(['embedding'])
    expect(keys(null, traits({ role: 'rerank', vision: false, tools: false }))).toEqual(['rerank'])
  })
  it('unknown traits (not prepared, no file facts): plain chat', () => {
    expect(playMode(purposeOf(null, traits({})))).toBe('chat')
    expect(keys(null, traits({}))).toEqual([])
  })
  it('draft and tools', () => {
    expect(keys(null, traits({ vision: false, chat_template: true, tools: true, draft: '/d/small.gguf' }))).toEqual(['tools', 'draft'])
  })
})
