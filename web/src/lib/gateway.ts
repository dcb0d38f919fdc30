/** The playground's side of the gateway (same origin, `/gateway/v1/...`): requests, the
 * server-sent events a streamed answer arrives as, and images as data URIs. */
import { authHeaders } from '../api/client'

/** POST JSON to the gateway (`signal` aborts it, and with it a streamed answer); an error answer (the OpenAI error shape) becomes an Error. */
export async function gatewayPost(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  const res = await fetch(`/gateway${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...authHeaders() },
    body: JSON.stringify(body),
    signal,
  })
  if (!res.ok || !res.body) {
    const data = await res.json().catch(() => ({}))
    throw new Error(data.error?.message ?? `${res.status} ${res.statusText}`)
  }
  return res
}

/** The JSON of each `data:` line of a streamed answer, until `[DONE]`; an `error` event throws. */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<Record<string, any>> {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buf = ''
  for (;;) {
    const { done, value } = await reader.read()
    buf += done ? decoder.decode() : decoder.decode(value, { stream: true })
    const lines = buf.split('\n')
    buf = done ? '' : lines.pop() ?? ''
    for (const raw of lines) {
      const line = raw.trimEnd()
      if (!line.startsWith('data:')) continue
      const payload = line.slice(5).trim()
      if (payload === '[DONE]') return
      const data = JSON.parse(payload)
      if (data.error) throw new Error(data.error.message ?? String(data.error))
      yield data
    }
    if (done) return
  }
}

export const IMAGE_TYPES = ['image/png', 'image/jpeg']

/** A PNG or JPEG file as a data URI (an OpenAI `image_url`); anything else is refused. */
export function readImage(file: File): Promise<string> {
  if (!IMAGE_TYPES.includes(file.type)) return Promise.reject(new Error(`${file.name} is not a PNG or JPEG image`))
  return new Promise((resolve, reject) => {
    const reader = new FileReader()
    reader.onload = () => resolve(String(reader.result))
    reader.onerror = () => reject(reader.error ?? new Error(`cannot read ${file.name}`))
    reader.readAsDataURL(file)
  })
}

/** Cosine similarity of two vectors (0 when either is all zeros). */
export function cosine(a: number[], b: number[]): number {
  let dot = 0
  let na = 0
  let nb = 0
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    dot += a[i] * b[i]
    na += a[i] * a[i]
    nb += b[i] * b[i]
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0
}
