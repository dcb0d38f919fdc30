import { describe, expect, it } from 'vitest'
import * as c from './companions'

describe('projector', () => {
  it('auto, none or a file, and offload', () => {
    expect(c.projector([])).toBe('auto')
    expect(c.projector(['--no-mmproj'])).toBe('none')
    expect(c.projector(['--mmproj', '/m/mmproj-f16.gguf'])).toBe('/m/mmproj-f16.gguf')
    expect(c.setProjector(['-c', '1', '-mm', '/a.gguf'], 'none')).toEqual(['-c', '1', '--no-mmproj'])
    expect(c.setProjector(['--no-mmproj'], '/b.gguf')).toEqual(['-mm', '/b.gguf'])
    expect(c.setProjector(['-mm', '/b.gguf', '--no-mmproj-offload'], 'auto')).toEqual(['--no-mmproj-offload'])
    expect(c.projectorOffload(['--no-mmproj-offload'])).toBe(false)
    expect(c.setProjectorOffload(['--no-mmproj-offload'], true)).toEqual([])
  })
})

describe('draft model', () => {
  it('sets -md and drops its own flags with it', () => {
    expect(c.draftModel(['--model-draft', 'small'])).toBe('small')
    expect(c.setDraftModel(['-c', '1'], 'repo:Q4_0')).toEqual(['-c', '1', '-md', 'repo:Q4_0'])
    expect(c.setDraftModel(['-md', 'x', '-ngld', '99', '--spec-draft-n-max', '8', '-c', '1'], null)).toEqual(['-c', '1'])
  })
})

describe('chat template', () => {
  it('tells a built-in name from Jinja text and a file', () => {
    expect(c.chatTemplate([])).toEqual({ mode: 'model', value: '' })
    expect(c.chatTemplate(['--chat-template', 'chatml'])).toEqual({ mode: 'name', value: 'chatml' })
    expect(c.chatTemplate(['--chat-template', '{{ messages }}']).mode).toBe('text')
    expect(c.chatTemplate(['--chat-template-file', '/t.jinja'])).toEqual({ mode: 'file', value: '/t.jinja' })
  })
  it('writes one of the two flags, never both', () => {
    expect(c.setChatTemplate(['--chat-template-file', '/t.jinja'], 'name', 'gemma')).toEqual(['--chat-template', 'gemma'])
    expect(c.setChatTemplate(['--chat-template', 'gemma'], 'file', '/t.jinja')).toEqual(['--chat-template-file', '/t.jinja'])
    expect(c.setChatTemplate(['--chat-template', 'gemma', '-c', '1'], 'model', 'x')).toEqual(['-c', '1'])
    expect(c.setChatTemplate([], 'name', '')).toEqual([])
  })
  it('reasoning format', () => {
    expect(c.setReasoningFormat([], 'deepseek')).toEqual(['--reasoning-format', 'deepseek'])
    expect(c.setReasoningFormat(['--reasoning-format', 'none'], null)).toEqual([])
  })
})
