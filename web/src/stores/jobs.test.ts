import { createPinia, setActivePinia } from 'pinia'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import type { Job } from '../api/types'
import { useJobs } from './jobs'

function job(over: Partial<Job> = {}): Job {
  return {
    id: 'j1',
    kind: 'build',
    title: 'build',
    state: 'running',
    progress: { done: 0, total: null, unit: '', message: '', fraction: null },
    rate: null,
    eta_s: null,
    error: null,
    params: {},
    result: {},
    created_at: '2026-12-02T10:00:00Z',
    updated_at: '2026-12-02T10:00:00Z',
    started_at: null,
    finished_at: null,
    log_lines: 0,
    cancellable: true,
    pausable: false,
    resumable: false,
    ...over,
  }
}

beforeEach(() => {
  setActivePinia(createPinia())
  vi.stubGlobal('localStorage', { getItem: () => null })
})

describe('jobs store', () => {
  it('applies the job.* events and leaves the others', () => {
    const s = useJobs()
    expect(s.handle({ type: 'job.changed', job: job() })).toBe(true)
    s.handle({ type: 'job.progress', id: 'j1', progress: { done: 1, total: 4, unit: 'steps', message: 'compiling', fraction: 0.25 }, rate: 2, eta_s: 1.5 })
    expect(s.jobs.j1.progress.fraction).toBe(0.25)
    expect(s.jobs.j1.eta_s).toBe(1.5)
    s.handle({ type: 'job.log', id: 'j1', line: 'one', n: 1 })
    s.handle({ type: 'job.log', id: 'j1', line: 'one', n: 1 }) // a repeat is dropped
    expect(s.logs.j1).toEqual(['one'])
    expect(s.handle({ type: 'model', model: 'm' })).toBe(false)
    s.handle({ type: 'job.removed', id: 'j1', kind: 'build' })
    expect(s.jobs.j1).toBeUndefined()
  })

  it('keeps lines that arrived over the socket while a detail was fetched', async () => {
    const s = useJobs()
    s.handle({ type: 'job.log', id: 'j1', line: 'c', n: 3 }) // newer than the detail below
    const detail = { ...job({ log_lines: 2 }), log: ['a', 'b'] }
    vi.stubGlobal('fetch', async () => new Response(JSON.stringify(detail), { headers: { 'content-type': 'application/json' } }))
    await s.open('j1')
    expect(s.logs.j1).toEqual(['a', 'b', 'c'])
    s.handle({ type: 'job.log', id: 'j1', line: 'd', n: 4 })
    expect(s.logs.j1).toEqual(['a', 'b', 'c', 'd'])
  })

  it('finds the running load of a model, newest jobs first', () => {
    const s = useJobs()
    s.handle({ type: 'job.changed', job: job({ id: 'l1', kind: 'load', params: { model: 'm' }, state: 'done' }) })
    expect(s.loadOf('m')).toBeUndefined()
    s.handle({ type: 'job.changed', job: job({ id: 'l2', kind: 'load', params: { model: 'm' }, created_at: '2026-12-02T11:00:00Z' }) })
    expect(s.loadOf('m')?.id).toBe('l2')
    expect(s.ofKind('load').map((j) => j.id)).toEqual(['l2', 'l1'])
  })
})
