/**
 * Jobs — downloads, engine builds and installs, model loads — in the one shape of `/api/jobs`,
 * kept current by the `job.*` events of `/ws` (the live store hands them here):
 * `job.changed` (the whole job), `job.progress`, `job.log` (numbered lines), `job.removed`.
 */
import { defineStore } from 'pinia'
import { reactive } from 'vue'
import { api } from '../api/client'
import type { Job, JobDetail } from '../api/types'

const MAX_LINES = 2000
const ACTIVE = new Set(['queued', 'running'])

export const useJobs = defineStore('jobs', () => {
  const jobs = reactive<Record<string, Job>>({})
  const logs = reactive<Record<string, string[]>>({})
  const logEnd: Record<string, number> = {} // the number of the last line held per job

  function upsert(job: Job) {
    jobs[job.id] = { ...(jobs[job.id] ?? {}), ...job }
  }

  /** Newest first. */
  function ofKind(...kinds: string[]): Job[] {
    return Object.values(jobs)
      .filter((j) => kinds.includes(j.kind))
      .sort((a, b) => (a.created_at < b.created_at ? 1 : -1))
  }

  /** The load of a model while it runs (the runtime tracks loads as jobs with `params.model`). */
  function loadOf(model: string): Job | undefined {
    return Object.values(jobs).find((j) => j.kind === 'load' && ACTIVE.has(j.state) && j.params?.model === model)
  }

  function appendLine(id: string, line: string, n: number) {
    if (n <= (logEnd[id] ?? 0)) return // already held (from a detail fetched meanwhile)
    const lines = (logs[id] ??= [])
    lines.push(line)
    if (lines.length > MAX_LINES) lines.splice(0, lines.length - MAX_LINES)
    logEnd[id] = n
  }

  /** Apply one `/ws` event; false when it is not about jobs. */
  function handle(ev: Record<string, any>): boolean {
    switch (ev.type) {
      case 'job.changed':
        upsert(ev.job)
        return true
      case 'job.progress':
        if (jobs[ev.id]) Object.assign(jobs[ev.id], { progress: ev.progress, rate: ev.rate, eta_s: ev.eta_s })
        return true
      case 'job.log':
        appendLine(ev.id, ev.line, ev.n)
        return true
      case 'job.removed':
        delete jobs[ev.id]
        delete logs[ev.id]
        delete logEnd[ev.id]
        return true
    }
    return false
  }

  /** The snapshot the socket starts with. */
  function reset(list: Job[]) {
    for (const id of Object.keys(jobs)) delete jobs[id]
    for (const j of list) jobs[j.id] = j
  }

  async function refresh() {
    for (const j of await api.get<Job[]>('/api/jobs', { query: { limit: 500 } })) upsert(j)
  }

  /** A job with its log's tail; lines that arrived over `/ws` meanwhile are kept. */
  async function open(id: string, tail = MAX_LINES): Promise<Job> {
    const detail = await api.get<JobDetail>('/api/jobs/{job_id}', { params: { job_id: id }, query: { tail } })
    const { log, ...job } = detail
    upsert(job)
    const held = logs[id] ?? []
    const newer = Math.max(0, (logEnd[id] ?? 0) - detail.log_lines)
    logs[id] = [...(log ?? []), ...(newer ? held.slice(-newer) : [])]
    logEnd[id] = Math.max(logEnd[id] ?? 0, detail.log_lines)
    return jobs[id]
  }

  async function act(id: string, action: 'cancel' | 'pause' | 'resume') {
    const path = `/api/jobs/{job_id}/${action}` as const
    upsert(await api.post<Job>(path, { params: { job_id: id } }))
  }

  return { jobs, logs, ofKind, loadOf, handle, reset, refresh, open, act }
})
