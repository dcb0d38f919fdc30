/** Shapes of the studio's JSON responses the UI reads (routes returning free-form objects). */
import type { components } from './schema'

export interface ModelStatus {
  name: string
  state: string
  reason: string | null
  in_flight: number
  queued: number
  idle_s: number | null
  pid: number | null
  port: number | null
  engine: string | null
  memory: Record<string, number>
  pinned: boolean
  ttl: number | null
  aliases?: string[]
  configured?: boolean
}

export interface LocalModel {
  id: string
  path: string
  files: string[]
  size: number
  quant: string
  source: string
  repo: string | null
  facts: { architecture?: string; parameter_count?: number; context_length?: number; license?: string; name?: string; error?: string }
}

/** A job of any kind (download, build, install, load): the `/api/jobs` shape, from the OpenAPI spec. */
export type Job = components['schemas']['Job']
export type JobDetail = components['schemas']['JobDetail']

export interface Engine {
  id: string
  name: string
  kind: string
  version: string
  commit: string
  backends: string[]
  validation: { ok?: boolean; error?: string | null }
  capability_count: number
  is_default: boolean
  in_use: boolean
  binaries: Record<string, string>
}

export interface Stats {
  t: number
  cpu_percent: number
  cpu_count: number
  ram_total: number
  ram_used: number
  disk_total: number
  disk_used: number
  gpus: { index: number; name: string; device: string; total: number; used: number; utilization_pct: number | null; temperature_c: number | null }[]
}

export interface Prepared {
  argv: string[]
  engine: string | null
  reserve: Record<string, number>
  estimate: { devices: { name: string; label: string; total: number }[]; n_ctx: number; n_gpu_layers: number } | null
  reasons: string[]
  dropped: string[]
  warnings: string[]
}

export interface ConfigView {
  config: {
    name: string
    model: string
    engine_id: string | null
    args: string[]
    auto: boolean
    aliases: string[]
    ttl: number | null
    pinned: boolean
    group: string | null
    max_concurrency: number
    max_queue: number
    configured: boolean
  }
  status: ModelStatus
  prepared: Prepared | null
  error: string | null
  budgets: Record<string, number>
  fits: boolean
}

export interface Quant {
  quant: string
  size: number
  files: string[]
  mmproj: string[]
  fit: 'full' | 'partial' | 'moe-offload' | 'cpu' | 'no' | 'unknown'
  detail: string
  max_context: number
  args: string[]
}

export interface RepoHit {
  id: string
  downloads: number
  likes: number
  license: string | null
  last_modified: string | null
  [k: string]: unknown
}
