/** The config editor's TTL field: idle seconds before a model is unloaded, typed as text so that
 * an empty field (the studio's default) and a bad value are both said, never saved silently. */

export const MAX_TTL = 10 * 365 * 86400 // serving/configs.py MAX_TTL

export type Ttl = { value: number | null; error: null } | { value: null; error: string }

/** '' → null (the default); a number of seconds from 0 to MAX_TTL; anything else → an error. */
export function parseTtl(text: string): Ttl {
  const t = text.trim()
  if (t === '') return { value: null, error: null }
  if (!/^[+-]?(\d+\.?\d*|\.\d+)$/.test(t)) return { value: null, error: `"${t}" is not a number of seconds` }
  const n = Number(t)
  if (n < 0) return { value: null, error: 'at least 0 (0: never unload; empty: the default)' }
  if (n > MAX_TTL) return { value: null, error: `at most ${MAX_TTL} s` }
  return { value: n, error: null }
}

/** What a TTL means, in words; ``fallback``: the studio's default TTL (null: not known). */
export function describeTtl(value: number | null, fallback: number | null): string {
  if (value === null) return fallback === null ? 'the default' : `the default (${describeTtl(fallback, null)})`
  if (value === 0) return 'never unloaded'
  return `unloaded after ${value} s idle`
}
