/** llama-server flags as an argv list, edited as one command line in the UI. */

/** Split a command line like a POSIX shell would (quotes and backslashes; no expansion). */
export function splitArgs(line: string): string[] {
  const out: string[] = []
  let cur = ''
  let inToken = false
  let quote: '"' | "'" | null = null
  for (let i = 0; i < line.length; i++) {
    const c = line[i]
    if (quote) {
      if (c === quote) quote = null
      else if (c === '\\' && quote === '"' && i + 1 < line.length && '"\\$`'.includes(line[i + 1])) cur += line[++i]
      else cur += c
    } else if (c === '"' || c === "'") {
      quote = c
      inToken = true
    } else if (c === '\\' && i + 1 < line.length) {
      cur += line[++i]
      inToken = true
    } else if (/\s/.test(c)) {
      if (inToken) out.push(cur)
      cur = ''
      inToken = false
    } else {
      cur += c
      inToken = true
    }
  }
  if (quote) throw new Error(`unclosed ${quote} quote`)
  if (inToken) out.push(cur)
  return out
}

/** Quote what needs quoting so that splitArgs(joinArgs(a)) equals a. */
export function joinArgs(argv: string[]): string {
  return argv.map((a) => (a === '' ? "''" : /^[\w@%+=:,./${}-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')
}

/** The value after the first of ``names`` present (e.g. ['-c', '--ctx-size']), or undefined. */
export function getFlag(argv: string[], names: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = splitInline(argv[i])
    if (names.includes(flag)) return inline ?? argv[i + 1]
  }
  return undefined
}

/** ``argv`` with the flag set to ``value`` (replacing any spelling of it), or removed when null. */
export function setFlag(argv: string[], names: string[], value: string | null): string[] {
  const out: string[] = []
  let done = false
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = splitInline(argv[i])
    if (names.includes(flag)) {
      if (inline === undefined) i++ // skip its value
      if (value !== null && !done) out.push(names[0], value)
      done = true
    } else {
      out.push(argv[i])
    }
  }
  if (!done && value !== null) out.push(names[0], value)
  return out
}

function splitInline(token: string): [string, string | undefined] {
  if (token.startsWith('--') && token.includes('=')) {
    const i = token.indexOf('=')
    return [token.slice(0, i), token.slice(i + 1)]
  }
  return [token, undefined]
}
