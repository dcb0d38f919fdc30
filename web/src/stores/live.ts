/**
 * Everything that changes by itself, kept current over `/ws`: system stats (with a short history
 * for charts), model states, model log tails, jobs (the jobs store takes the `job.*` events) and
 * the gateway's requests (the activity store takes the `activity` events).
 * The socket reconnects by itself (1 s, doubling up to 15 s) and starts from the server's snapshot.
 */
import { defineStore } from 'pinia'
import { reactive, ref } from 'vue'
import { apiKey } from '../api/client'
import type { ModelStatus, Stats } from '../api/types'
import { useActivity } from './activity'
import { useJobs } from './jobs'

const MAX_LINES = 500

export const useLive = defineStore('live', () => {
  const connected = ref(false)
  const stats = ref<Stats[]>([])
  const models = reactive<Record<string, ModelStatus>>({})
  const modelLogs = reactive<Record<string, string[]>>({})
  const jobs = useJobs()
  const activity = useActivity()
  let socket: WebSocket | null = null
  let delay = 1000
  let stopped = false

  function push(store: Record<string, string[]>, key: string, line: string) {
    const lines = (store[key] ??= [])
    lines.push(line)
    if (lines.length > MAX_LINES) lines.splice(0, lines.length - MAX_LINES)
  }

  function handle(ev: Record<string, any>) {
    if (jobs.handle(ev) || activity.handle(ev)) return
    switch (ev.type) {
      case 'hello':
        stats.value = ev.stats ?? []
        for (const m of ev.models ?? []) models[m.name] = m
        jobs.reset(ev.jobs ?? [])
        break
      case 'stats':
        stats.value = [...stats.value.slice(-119), ev.stats]
        break
      case 'model':
        models[ev.model] = { ...(models[ev.model] ?? {}), ...(ev.status ?? { name: ev.model, state: ev.state }) }
        if (ev.reason) models[ev.model].reason = ev.reason
        break
      case 'log':
        push(modelLogs, ev.model, ev.line)
        break
    }
  }

  function connect() {
    stopped = false
    const proto = location.protocol === 'https:' ? 'wss' : 'ws'
    const key = apiKey()
    socket = new WebSocket(`${proto}://${location.host}/ws${key ? `?key=${encodeURIComponent(key)}` : ''}`)
    socket.onopen = () => {
      connected.value = true
      delay = 1000
      activity.refresh().catch(() => undefined) // what ended while the socket was down
    }
    socket.onmessage = (msg) => handle(JSON.parse(msg.data))
    socket.onclose = () => {
      connected.value = false
      socket = null
      if (!stopped) {
        setTimeout(connect, delay)
        delay = Math.min(delay * 2, 15000)
      }
    }
  }

  function disconnect() {
    stopped = true
    socket?.close()
  }

  return { connected, stats, models, modelLogs, connect, disconnect, handle }
})
