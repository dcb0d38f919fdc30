/**
 * Everything that changes by itself, kept current over `/ws`: system stats (with a short history
 * for charts), model states, download jobs, engine jobs and their logs, model log tails. The
 * socket reconnects by itself (1 s, doubling up to 15 s) and starts from the server's snapshot.
 */
import { defineStore } from 'pinia'
import { reactive, ref } from 'vue'
import { apiKey } from '../api/client'
import type { DownloadJob, EngineJob, ModelStatus, Stats } from '../api/types'

const MAX_LINES = 500

export const useLive = defineStore('live', () => {
  const connected = ref(false)
  const stats = ref<Stats[]>([])
  const models = reactive<Record<string, ModelStatus>>({})
  const downloads = reactive<Record<string, DownloadJob>>({})
  const engineJobs = reactive<Record<string, EngineJob>>({})
  const engineLogs = reactive<Record<string, string[]>>({})
  const modelLogs = reactive<Record<string, string[]>>({})
  let socket: WebSocket | null = null
  let delay = 1000
  let stopped = false

  function push(store: Record<string, string[]>, key: string, line: string) {
    const lines = (store[key] ??= [])
    lines.push(line)
    if (lines.length > MAX_LINES) lines.splice(0, lines.length - MAX_LINES)
  }

  function handle(ev: Record<string, any>) {
    switch (ev.type) {
      case 'hello':
        stats.value = ev.stats ?? []
        for (const m of ev.models ?? []) models[m.name] = m
        for (const j of ev.downloads ?? []) downloads[j.id] = j
        for (const j of ev.engine_jobs ?? []) engineJobs[j.id] = j
        break
      case 'stats':
        stats.value = [...stats.value.slice(-119), ev.stats]
        break
      case 'model':
        models[ev.model] = { ...(models[ev.model] ?? {}), ...(ev.status ?? { name: ev.model, state: ev.state }) }
        if (ev.reason) models[ev.model].reason = ev.reason
        break
      case 'job':
        if (ev.job?.id) downloads[ev.job.id] = { ...(downloads[ev.job.id] ?? {}), ...ev.job }
        break
      case 'progress':
        if (downloads[ev.id]) {
          const { type: _t, id: _i, ...rest } = ev
          Object.assign(downloads[ev.id], rest, { state: 'running' })
        }
        break
      case 'engine_job':
        engineJobs[ev.job.id] = { ...(engineJobs[ev.job.id] ?? {}), ...ev.job }
        break
      case 'engine_log':
        push(engineLogs, ev.job, ev.line)
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

  return { connected, stats, models, downloads, engineJobs, engineLogs, modelLogs, connect, disconnect, handle }
})
