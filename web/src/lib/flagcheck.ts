/**
 * The config editor's check of a flag line as the engine would read it, as the user types: a flag
 * the engine's `--help` does not list (`capabilities` in `/api/engines`), a flag missing its value,
 * a number that is not one, a value outside a fixed set, `--flag=value` (llama-server reads only
 * `--flag value`; the flags the studio models it re-spells). Each problem carries the line llama-server
 * itself prints when it stops at start (common/arg.cpp). The studio checks the same on preview and
 * save (`serving/validate.py`, `engines/command.py`): this is the instant half, that is the truth.
 */
import { TAKES_VALUE } from './args'

export interface FlagProblem {
  flag: string
  text: string // the studio's explanation
  engineSays: string // llama-server's own words
}

// flags llama-server reads with std::stoi / std::stof (a subset of serving/validate.py's tables:
// those the editor's fields and common lines use)
const INTS = new Set(
  ('-c --ctx-size -b --batch-size -ub --ubatch-size -np --parallel -t --threads -tb --threads-batch ' +
    '--top-k -n --predict --n-predict --keep --yarn-orig-ctx -ncmoe --n-cpu-moe -mg --main-gpu ' +
    '--spec-draft-n-max --spec-draft-n-min --repeat-last-n --mirostat').split(' '),
)
const FLOATS = new Set(
  ('--temp --temperature --top-p --min-p --repeat-penalty --presence-penalty --frequency-penalty ' +
    '--rope-scale --rope-freq-base --rope-freq-scale --typical --typical-p').split(' '),
)
const CACHE = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'iq4_nl', 'q5_0', 'q5_1']
const CHOICES: Record<string, string[]> = {
  '-fa': ['on', 'off', 'auto', '1', '0', 'true', 'false'],
  '--flash-attn': ['on', 'off', 'auto', '1', '0', 'true', 'false'],
  '-ctk': CACHE,
  '--cache-type-k': CACHE,
  '-ctv': CACHE,
  '--cache-type-v': CACHE,
  '-sm': ['none', 'layer', 'row', 'tensor'],
  '--split-mode': ['none', 'layer', 'row', 'tensor'],
  '--rope-scaling': ['none', 'linear', 'yarn'],
}
const NUMBER = /^-(\d|\.\d)/
// flags the studio reads and re-spells for each engine (fit/argv.py: _VALUE_FLAGS, _BOOL_FLAGS, the
// legacy --no-mmap/--mlock): never refused as unknown here, the engine gets its own spelling
const REWRITTEN = new Set(
  (
    '--batch-size --cache-type-k --cache-type-k-draft --cache-type-v --cache-type-v-draft --cpu-moe ' +
    '--ctx-size --device --device-draft --direct-io --draft --draft-max --draft-min --draft-n ' +
    '--draft-n-min --embedding --embeddings --flash-attn --gpu-layers --gpu-layers-draft --kv-offload ' +
    '--kv-unified --kv-unified-per-slot --lazy-mode --load-mode --main-gpu --mlock --mmap --mmproj ' +
    '--mmproj-auto --mmproj-offload --model-draft --n-cpu-ffn --n-cpu-moe --n-gpu-layers ' +
    '--n-gpu-layers-draft --no-host --no-kv-offload --no-kv-unified --no-mmap --no-mmproj ' +
    '--no-mmproj-auto --no-mmproj-offload --no-repack --override-tensor --parallel --pooling --repack ' +
    '--rerank --reranking --spec-draft-device --spec-draft-model --spec-draft-n-max ' +
    '--spec-draft-n-min --spec-draft-ngl --spec-draft-type-k --spec-draft-type-v --split-mode ' +
    '--swa-full --tensor-split --ubatch-size -b -c -cmoe -ctk -ctkd -ctv -ctvd -dev -devd -dio -fa ' +
    '-kvo -kvu -lm -lzm -md -mg -mm -ncffn -ncmoe -ngl -ngld -nkvo -no-kvu -np -nr -ot -sm -ts -ub '
  ).trim().split(' '),
)

/** Whether a token is written as a flag (a negative number is a value). */
export function isFlag(token: string): boolean {
  return token.startsWith('-') && token !== '-' && !NUMBER.test(token)
}

export const says = {
  unknown: (flag: string) => `error: invalid argument: ${flag}`,
  handling: (flag: string, what: string) => `error while handling argument "${flag}": ${what}`,
}

/** What llama-server says of a value outside a flag's set (after `error while handling …: `). */
function badChoice(flag: string, value: string): string {
  if (flag === '-fa' || flag === '--flash-attn') return `error: unknown value for --flash-attn: '${value}'`
  if (CHOICES[flag] === CACHE) return `Unsupported cache type: ${value}`
  return 'invalid value'
}

/** The first problem of each flag in ``argv`` (in order); ``capabilities``: the engine's flags
 * (null or empty: unknown, nothing is refused as unknown). */
export function checkFlags(argv: string[], capabilities: string[] | null | undefined): FlagProblem[] {
  const caps = capabilities && capabilities.length ? new Set(capabilities) : null
  const out: FlagProblem[] = []
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]
    if (!isFlag(token)) continue
    const eq = token.startsWith('--') ? token.indexOf('=') : -1
    const flag = eq > 0 ? token.slice(0, eq) : token
    if (caps && !caps.has(flag) && !REWRITTEN.has(flag)) {
      out.push({ flag, text: `${flag} is not a flag of this engine (not in its --help)`, engineSays: says.unknown(token) })
      continue
    }
    if (eq > 0 && !REWRITTEN.has(flag)) {
      // llama-server reads only "--flag value"; the flags the studio models are re-spelled
      out.push({ flag, text: `llama-server reads no ${flag}=VALUE: write ${flag} ${token.slice(eq + 1)}`, engineSays: says.unknown(token) })
      continue
    }
    const takes = TAKES_VALUE.has(flag) || INTS.has(flag) || FLOATS.has(flag) || flag in CHOICES
    if (!takes) continue
    let value: string
    if (eq > 0) value = token.slice(eq + 1)
    // a word's value may look like a flag (an alias, a template): llama-server takes it as is
    else if (i + 1 < argv.length && (!isFlag(argv[i + 1]) || !(INTS.has(flag) || FLOATS.has(flag) || flag in CHOICES))) value = argv[++i]
    else {
      out.push({ flag, text: `${flag} needs a value`, engineSays: says.handling(flag, 'expected value for argument') })
      continue
    }
    if (INTS.has(flag) && !/^[+-]?\d+$/.test(value.trim()))
      out.push({ flag, text: `${flag} needs a whole number, not ${JSON.stringify(value)}`, engineSays: says.handling(flag, 'stoi') })
    else if (FLOATS.has(flag) && !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(value.trim()))
      out.push({ flag, text: `${flag} needs a number, not ${JSON.stringify(value)}`, engineSays: says.handling(flag, 'stof') })
    else if (CHOICES[flag] && !CHOICES[flag].includes(value))
      out.push({
        flag,
        text: `${flag} takes one of ${CHOICES[flag].filter((c) => !/^(1|0|true|false)$/.test(c)).join(', ')}, not ${JSON.stringify(value)}`,
        engineSays: says.handling(flag, badChoice(flag, value)),
      })
  }
  return out
}
