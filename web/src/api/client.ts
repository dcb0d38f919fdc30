/**
 * The studio's REST API, typed by the schema generated from its own OpenAPI spec
 * (`scripts/build_web.py` → `schema.d.ts`). Every error the server sends has one shape,
 * `{"error": {"code", "message", "source"}}`; it becomes an ApiError and is reported through the
 * handler App.vue installs (a toast), so no failure is silent.
 */
import type { components, paths } from './schema'

export type Schemas = components['schemas']
export type ConfigIn = Schemas['ConfigIn']
export type BuildIn = Schemas['BuildIn']

type Method = 'get' | 'post' | 'put' | 'patch' | 'delete'
type PathsWith<M extends Method> = { [P in keyof paths]: paths[P] extends Record<M, object> ? P : never }[keyof paths]

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public details: Record<string, unknown> = {}, // the error's `details` (e.g. `flag` of a refused flag)
  ) {
    super(message)
  }
}

let onError: (e: ApiError) => void = () => {}
export function setErrorHandler(fn: (e: ApiError) => void): void {
  onError = fn
}

export const KEY_STORAGE = 'llamastudio.apiKey'
export function apiKey(): string {
  return localStorage.getItem(KEY_STORAGE) ?? ''
}

/** The key (when set) and the studio's client header: the server refuses a state-changing request
 * with neither a JSON body nor this header, as a cross-site page could send it without asking. */
export function authHeaders(): Record<string, string> {
  const key = apiKey()
  return { 'X-Studio-Client': 'web', ...(key ? { Authorization: `Bearer ${key}` } : {}) }
}

/** Fill `{name}` segments (a model id may contain `/` and `:`; it is sent as is). */
function fill(path: string, params: Record<string, string>): string {
  return path.replace(/\{(\w+)\}/g, (_, k: string) => params[k].split('/').map(encodeURIComponent).join('/'))
}

export interface CallOptions {
  params?: Record<string, string>
  query?: Record<string, string | number | boolean | undefined | null>
  body?: unknown
  quiet?: boolean // do not report errors through the handler
}

async function call<T>(method: Method, path: string, opts: CallOptions = {}): Promise<T> {
  let url = fill(path, opts.params ?? {})
  const q = Object.entries(opts.query ?? {}).filter(([, v]) => v !== undefined && v !== null)
  if (q.length) url += '?' + new URLSearchParams(q.map(([k, v]) => [k, String(v)])).toString()
  let res: Response
  try {
    res = await fetch(url, {
      method: method.toUpperCase(),
      headers: { ...authHeaders(), ...(opts.body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
    })
  } catch {
    const err = new ApiError(0, 'unreachable', 'the studio is not reachable')
    if (!opts.quiet) onError(err)
    throw err
  }
  if (!res.ok) {
    let code = 'http_error'
    let message = `${res.status} ${res.statusText}`
    let details: Record<string, unknown> = {}
    try {
      const data = await res.json()
      code = data.error?.code ?? code
      message = data.error?.message ?? message
      details = data.error?.details ?? details
    } catch {
      /* not JSON */
    }
    const err = new ApiError(res.status, code, message, details)
    if (!opts.quiet) onError(err)
    throw err
  }
  if (res.status === 204) return undefined as T
  const type = res.headers.get('content-type') ?? ''
  return (type.includes('json') ? await res.json() : await res.text()) as T
}

export const api = {
  get: <T>(path: PathsWith<'get'>, opts?: CallOptions) => call<T>('get', path, opts),
  post: <T>(path: PathsWith<'post'>, opts?: CallOptions) => call<T>('post', path, opts),
  put: <T>(path: PathsWith<'put'>, opts?: CallOptions) => call<T>('put', path, opts),
  patch: <T>(path: PathsWith<'patch'>, opts?: CallOptions) => call<T>('patch', path, opts),
  delete: <T>(path: PathsWith<'delete'>, opts?: CallOptions) => call<T>('delete', path, opts),
}
