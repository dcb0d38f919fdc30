/**
 * The gateway's recent requests (`GET /api/activity`, then the `activity` events of `/ws`): one
 * entry per request, in flight (`status` null) until it ends. Newest first; at most `KEEP` held.
 */
import { defineStore } from 'pinia'
import { computed, reactive } from 'vue'
import { api } from '../api/client'
import type { Schemas } from '../api/client'

export type ActivityRequest = Schemas['ActivityRequest']
const KEEP = 200

export const useActivity = defineStore('activity', () => {
  const byId = reactive<Record<number, ActivityRequest>>({})

  function upsert(r: ActivityRequest) {
    byId[r.id] = r
    const ids = Object.keys(byId).map(Number)
    if (ids.length > KEEP) for (const id of ids.sort((a, b) => a - b).slice(0, ids.length - KEEP)) delete byId[id]
  }

  /** Newest first. */
  const requests = computed(() => Object.values(byId).sort((a, b) => b.id - a.id))

  /** Apply one `/ws` event; false when it is not an activity event. */
  function handle(ev: Record<string, any>): boolean {
    if (ev.type !== 'activity') return false
    upsert(ev.request as ActivityRequest)
    return true
  }

  async function refresh() {
    for (const r of await api.get<ActivityRequest[]>('/api/activity', { quiet: true })) upsert(r)
  }

  return { requests, handle, refresh }
})
