import { createPinia, setActivePinia } from 'pinia'
import { beforeEach, describe, expect, it } from 'vitest'
import { useActivity, type ActivityRequest } from './activity'

function req(id: number, over: Partial<ActivityRequest> = {}): ActivityRequest {
  return {
    id,
    model: 'm',
    path: '/v1/chat/completions',
    started_at: 1_700_000_000 + id,
    status: null,
    queued_ms: null,
    duration_ms: null,
    ttft_ms: null,
    tokens_in: null,
    cached: null,
    tokens_out: null,
    tokens_per_second: null,
    ...over,
  }
}

describe('activity store', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('an event updates its request in place: waiting, running, done', () => {
    const store = useActivity()
    expect(store.handle({ type: 'activity', request: req(1) })).toBe(true)
    expect(store.handle({ type: 'activity', request: req(1, { queued_ms: 3 }) })).toBe(true)
    expect(store.requests).toHaveLength(1)
    store.handle({ type: 'activity', request: req(1, { queued_ms: 3, status: 200, tokens_out: 7 }) })
    expect(store.requests).toEqual([req(1, { queued_ms: 3, status: 200, tokens_out: 7 })])
  })

  it('other events are not its own', () => {
    expect(useActivity().handle({ type: 'job.changed', job: {} })).toBe(false)
  })

  it('newest first, and at most 200 held (the oldest go)', () => {
    const store = useActivity()
    for (let i = 1; i <= 205; i++) store.handle({ type: 'activity', request: req(i) })
    expect(store.requests).toHaveLength(200)
    expect(store.requests[0].id).toBe(205)
    expect(store.requests[199].id).toBe(6)
  })
})
