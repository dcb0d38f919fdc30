/** llama-server flags as an argv list, edited as one command line in the UI. The argv list is the
 * one source of truth: named fields read and write it through getFlag/setFlag/setSwitch. */

/** Split a command line like a POSIX shell would (quotes and backslashes; no expansion). */
export function splitArgs(line: string): string[] {
  const out: string[] = []
  let cur = ''
  let inToken = false
  let quote: '"' | "'" | null = null
  let opened = 0
  for (let i = 0; i < line.length; i++) {
    const c = line[i]
    if (quote) {
      if (c === quote) quote = null
      else if (c === '\\' && quote === '"' && i + 1 < line.length && '"\\$`'.includes(line[i + 1])) cur += line[++i]
      else cur += c
    } else if (c === '"' || c === "'") {
      quote = c
      opened = i
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
  if (quote) throw new Error(`unclosed ${quote} quote (opened at character ${opened + 1}): close it, or escape it as \\${quote}`)
  if (inToken) out.push(cur)
  return out
}

/** ``splitArgs`` without throwing: the argv, or why the line cannot be read (nothing is saved from
 * a line that cannot be read: an unclosed quote once saved an empty flag list). */
export function parseArgs(line: string): { args: string[]; error: null } | { args: null; error: string } {
  try {
    return { args: splitArgs(line), error: null }
  } catch (e) {
    return { args: null, error: (e as Error).message }
  }
}

/** Quote what needs quoting so that splitArgs(joinArgs(a)) equals a. */
export function joinArgs(argv: string[]): string {
  return argv.map((a) => (a === '' ? "''" : /^[\w@%+=:,./${}-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')
}

/** Flags known to take a value: their value is never read as a flag (a chat template or a path
 * may look like one). Only flags that always take exactly one value belong here. */
export const TAKES_VALUE = new Set(
  (
    '-m --model -a --alias -c --ctx-size -ngl --gpu-layers --n-gpu-layers -b --batch-size -ub --ubatch-size ' +
    '-np --parallel -ctk --cache-type-k -ctv --cache-type-v -t --threads -tb --threads-batch ' +
    '--temp --temperature --top-k --top-p --min-p --repeat-penalty --rope-scaling --rope-scale ' +
    '--rope-freq-base --rope-freq-scale --yarn-orig-ctx -mm --mmproj -md --model-draft --spec-draft-model ' +
    '-ngld --spec-draft-ngl --gpu-layers-draft --n-gpu-layers-draft --spec-draft-n-max --spec-draft-n-min ' +
    '--chat-template --chat-template-file --chat-template-kwargs --reasoning-format -ot --override-tensor ' +
    '-ts --tensor-split -sm --split-mode -mg --main-gpu -dev --device --n-cpu-moe -ncmoe --host --port ' +
    '--pooling -ctkd -ctvd -devd --spec-type --draft --draft-n --draft-max --draft-min --draft-n-min'
  ).split(' '),
)

/** Whether the token after ``argv[i]`` is that flag's value (to be skipped when looking for flags). */
function valueFollows(flag: string, inline: string | undefined): boolean {
  return inline === undefined && TAKES_VALUE.has(flag)
}

/** The value after the first of ``names`` present (e.g. ['-c', '--ctx-size']), or undefined. */
export function getFlag(argv: string[], names: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = splitInline(argv[i])
    if (names.includes(flag)) return inline ?? argv[i + 1]
    if (valueFollows(flag, inline)) i++
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
      if (valueFollows(flag, inline) && i + 1 < argv.length) out.push(argv[++i])
    }
  }
  if (!done && value !== null) out.push(names[0], value)
  return out
}

/** Whether any of ``names`` (a flag without a value, e.g. ['--no-mmproj']) is present. */
export function hasSwitch(argv: string[], names: string[]): boolean {
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = splitInline(argv[i])
    if (names.includes(flag)) return true
    if (valueFollows(flag, inline)) i++
  }
  return false
}

/** ``argv`` with the value-less flag present once (as names[0]) or absent. */
export function setSwitch(argv: string[], names: string[], on: boolean): string[] {
  const out: string[] = []
  let done = false
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = splitInline(argv[i])
    if (names.includes(flag)) {
      if (on && !done) out.push(names[0])
      done = true
    } else {
      out.push(argv[i])
      if (valueFollows(flag, inline) && i + 1 < argv.length) out.push(argv[++i])
    }
  }
  if (on && !done) out.push(names[0])
  return out
}

function splitInline(token: string): [string, string | undefined] {
  if (token.startsWith('--') && token.includes('=')) {
    const i = token.indexOf('=')
    return [token.slice(0, i), token.slice(i + 1)]
  }
  return [token, undefined]
}
