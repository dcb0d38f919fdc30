/** Shapes of the studio's JSON responses the UI reads (routes returning free-form objects). */
import type { components } from './schema'

/** A model's status (`/api/running`, `…/start`, `…/stop`, the live store); from `/api/served` it
 * also says what it serves. From the OpenAPI spec (the service's snapshots). */
export type ModelStatus = components['schemas']['ModelStatus'] &
  Partial<Pick<components['schemas']['ServedModel'], 'model' | 'aliases' | 'configured' | 'traits'>>

/** What a model does (`traits` in `/api/served` and a prepared config), known once it is prepared. */
export type ModelTraits = components['schemas']['ModelTraits']

export interface LocalModel {
  id: string
  path: string
  files: string[]
  size: number
  quant: string
  source: string
  repo: string | null
  format?: 'gguf' | 'safetensors'
  mmproj?: string[] // its multimodal projector files: a vision model
  facts: {
    architecture?: string
    parameter_count?: number
    context_length?: number
    license?: string
    name?: string
    error?: string
    role?: 'chat' | 'embedding' | 'rerank' | 'mmproj'
    pooling?: string | null
    chat_template?: boolean
    template_family?: string | null
    tools?: boolean
    embedding_length?: number
  }
}

/** A job of any kind (download, build, install, load): the `/api/jobs` shape, from the OpenAPI spec. */
export type Job = components['schemas']['Job']
export type JobDetail = components['schemas']['JobDetail']

export interface Engine {
  id: string
  name: string
  kind: string
  family: string
  version: string
  commit: string
  backends: string[]
  validation: { ok?: boolean; error?: string | null }
  capability_count: number
  capabilities: string[] // every flag spelling its --help lists
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

/** What starting a model runs and reserves, and a configuration's view (`/api/models/{id}/config`). */
export type Prepared = components['schemas']['PreparedView']
export type ConfigView = components['schemas']['ConfigView']
/** A llama.cpp load's memory: the estimate beside what a load of the same key allocated, and what
 * the reservation is based on (`prepared.memory`). */
export type MemoryView = components['schemas']['MemoryView']
/** A library model that can draft for another (`/api/models/{id}/drafts`). */
export type DraftCandidate = components['schemas']['DraftCandidate']

export interface Quant {
  quant: string
  size: number
  files: string[]
  mmproj: string[]
  fit: 'full' | 'partial' | 'moe-offload' | 'cpu' | 'no' | 'unknown'
  detail: string
  max_context: number
  args: string[]
  // safetensors checkpoints: memory from config.json and the shard headers
  format?: 'gguf' | 'safetensors'
  weight_bytes?: number
  params?: number
  dtype?: string
  kv_bytes_per_token?: number
  architecture?: string
}

export interface RepoHit {
  id: string
  downloads: number
  likes: number
  license: string | null
  last_modified: string | null
  [k: string]: unknown
}
