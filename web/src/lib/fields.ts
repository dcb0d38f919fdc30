/**
 * Named llama-server settings for the config editor. Each field is a view of one flag in the argv
 * list (read with getFlag, written with setFlag: the raw line shows the same flag), checked
 * against the engine's flags (its `--help`, `capabilities` in `/api/engines`).
 */
import { getFlag, setFlag } from './args'

export type FieldKind = 'int' | 'float' | 'choice' | 'layers'
export type FieldGroup = 'memory' | 'sampling' | 'rope'

export interface Option {
  label: string
  value: string
}

export interface FieldSpec {
  key: string
  label: string
  names: string[] // every spelling; names[0] is the one written
  kind: FieldKind
  group: FieldGroup
  help: string
  options?: Option[] // choice: the values (the empty choice, "default", removes the flag)
  min?: number
  max?: number
  step?: number
  digits?: number // float: fraction digits shown
  placeholder?: string // what llama-server does without the flag
}

/** llama.cpp's KV cache types (`-ctk`/`-ctv`), as the studio's estimator knows them. */
export const CACHE_TYPES = ['f16', 'bf16', 'f32', 'q8_0', 'q5_1', 'q5_0', 'q4_1', 'q4_0', 'iq4_nl']
const choices = (values: string[]): Option[] => values.map((v) => ({ label: v, value: v }))

export const FIELDS: FieldSpec[] = [
  { key: 'ctx', label: 'Context', names: ['-c', '--ctx-size'], kind: 'int', group: 'memory', min: 0, step: 512, placeholder: "model's", help: 'Tokens of context (all slots together); 0 or empty: the context the model was trained for' },
  { key: 'ngl', label: 'GPU layers', names: ['-ngl', '--gpu-layers', '--n-gpu-layers'], kind: 'layers', group: 'memory', placeholder: 'auto', help: 'Layers on the GPU: a number, all, or auto (fit what the free memory holds)' },
  { key: 'batch', label: 'Batch', names: ['-b', '--batch-size'], kind: 'int', group: 'memory', min: 1, step: 256, placeholder: '2048', help: 'Logical batch: tokens a prompt is processed in' },
  { key: 'ubatch', label: 'Micro-batch', names: ['-ub', '--ubatch-size'], kind: 'int', group: 'memory', min: 1, step: 128, placeholder: '512', help: 'Physical batch: larger is faster prompt processing and a larger compute buffer' },
  { key: 'parallel', label: 'Parallel slots', names: ['-np', '--parallel'], kind: 'int', group: 'memory', min: -1, placeholder: 'auto', help: 'Requests served at once; the context is shared among them (-1: auto)' },
  { key: 'fa', label: 'Flash attention', names: ['-fa', '--flash-attn'], kind: 'choice', group: 'memory', options: choices(['on', 'off', 'auto']), placeholder: 'auto', help: 'Smaller compute buffers; needed for a quantized V cache' },
  { key: 'ctk', label: 'K cache', names: ['-ctk', '--cache-type-k'], kind: 'choice', group: 'memory', options: choices(CACHE_TYPES), placeholder: 'f16', help: 'Data type of the K cache: q8_0 halves it' },
  { key: 'ctv', label: 'V cache', names: ['-ctv', '--cache-type-v'], kind: 'choice', group: 'memory', options: choices(CACHE_TYPES), placeholder: 'f16', help: 'Data type of the V cache (quantized needs flash attention)' },
  { key: 'threads', label: 'Threads', names: ['-t', '--threads'], kind: 'int', group: 'memory', min: -1, placeholder: 'auto', help: 'CPU threads for generation' },
  { key: 'temp', label: 'Temperature', names: ['--temp', '--temperature'], kind: 'float', group: 'sampling', min: 0, max: 5, step: 0.05, digits: 2, placeholder: '0.80', help: "Default when a request sets none" },
  { key: 'topk', label: 'Top-k', names: ['--top-k'], kind: 'int', group: 'sampling', min: 0, placeholder: '40', help: '0 disables it' },
  { key: 'topp', label: 'Top-p', names: ['--top-p'], kind: 'float', group: 'sampling', min: 0, max: 1, step: 0.05, digits: 2, placeholder: '0.95', help: '1.0 disables it' },
  { key: 'minp', label: 'Min-p', names: ['--min-p'], kind: 'float', group: 'sampling', min: 0, max: 1, step: 0.01, digits: 2, placeholder: '0.05', help: '0 disables it' },
  { key: 'repeat', label: 'Repeat penalty', names: ['--repeat-penalty'], kind: 'float', group: 'sampling', min: 0, max: 5, step: 0.05, digits: 2, placeholder: '1.00', help: '1.0 disables it' },
  { key: 'ropeScaling', label: 'RoPE scaling', names: ['--rope-scaling'], kind: 'choice', group: 'rope', options: choices(['none', 'linear', 'yarn']), placeholder: "model's", help: 'How positions beyond the trained context are scaled' },
  { key: 'ropeScale', label: 'RoPE scale', names: ['--rope-scale'], kind: 'float', group: 'rope', min: 0, step: 0.5, digits: 2, placeholder: "model's", help: 'Context expansion factor (2: twice the trained context)' },
  { key: 'ropeBase', label: 'RoPE freq base', names: ['--rope-freq-base'], kind: 'float', group: 'rope', min: 0, step: 1000, digits: 0, placeholder: "model's", help: 'Base frequency (NTK-aware scaling)' },
  { key: 'yarnCtx', label: 'YaRN original ctx', names: ['--yarn-orig-ctx'], kind: 'int', group: 'rope', min: 0, step: 1024, placeholder: "model's", help: 'The context the model was trained with, for YaRN' },
]

export const GROUPS: { key: FieldGroup; label: string }[] = [
  { key: 'memory', label: 'Memory and speed' },
  { key: 'sampling', label: 'Sampling defaults' },
  { key: 'rope', label: 'RoPE / YaRN context extension' },
]

export function field(key: string): FieldSpec {
  const f = FIELDS.find((x) => x.key === key)
  if (!f) throw new Error(`no field ${key}`)
  return f
}

/** The flag's value as the field shows it: a number for int/float fields (null when absent or not
 * a number), the raw string for choice and layers fields (null when absent). */
export function readField(argv: string[], spec: FieldSpec): number | string | null {
  const raw = getFlag(argv, spec.names)
  if (raw === undefined) return null
  if (spec.kind === 'int' || spec.kind === 'float') {
    const n = Number(raw)
    return raw.trim() !== '' && Number.isFinite(n) ? n : null
  }
  return raw
}

/** ``argv`` with the field set (null or '' removes the flag). */
export function writeField(argv: string[], spec: FieldSpec, value: number | string | null | undefined): string[] {
  if (value === null || value === undefined || value === '') return setFlag(argv, spec.names, null)
  return setFlag(argv, spec.names, String(value))
}

/** Why an engine cannot take one of these flags, or null when it can (or its flags are unknown). */
export function lacks(names: string[], capabilities: string[] | null | undefined, engine = 'this engine'): string | null {
  if (!capabilities || capabilities.length === 0) return null
  return names.some((n) => capabilities.includes(n)) ? null : `${engine} has no ${names[0]}`
}

/** What is wrong with a field's current value (an error), or a caution (a warning), or nothing.
 * A context above the trained one is an error unless ``allowBeyond`` (the editor's explicit
 * override), then a warning while no RoPE scaling is set. */
export function check(
  argv: string[],
  spec: FieldSpec,
  trainedCtx: number | null | undefined,
  allowBeyond = false,
): { level: 'error' | 'warn'; text: string; detail?: string } | null {
  const raw = getFlag(argv, spec.names)
  if (raw === undefined) return null
  if (spec.kind === 'int' || spec.kind === 'float') {
    const n = Number(raw)
    if (raw.trim() === '' || !Number.isFinite(n) || (spec.kind === 'int' && !Number.isInteger(n)))
      return { level: 'error', text: `${spec.names[0]} needs ${spec.kind === 'int' ? 'a whole number' : 'a number'}, not ${JSON.stringify(raw)}` }
    if (spec.min !== undefined && n < spec.min) return { level: 'error', text: `at least ${spec.min}` }
    if (spec.max !== undefined && n > spec.max) return { level: 'error', text: `at most ${spec.max}` }
  }
  if (spec.kind === 'layers' && !/^(auto|all|\d+)$/.test(raw)) return { level: 'error', text: 'a number, all or auto' }
  if (spec.kind === 'choice' && spec.options && !spec.options.some((o) => o.value === raw))
    return { level: 'error', text: `one of ${spec.options.map((o) => o.value).join(', ')}` }
  const scaling = getFlag(argv, field('ropeScaling').names)
  const trained = trainedCtx?.toLocaleString('en-US')
  if (spec.key === 'ctx' && trainedCtx && Number(raw) > trainedCtx && !allowBeyond)
    return {
      level: 'error',
      text: `above the trained ${trained}: at most ${trained}, or allow beyond trained context`,
      detail: `The model was trained for ${trained} tokens: a longer context needs RoPE/YaRN scaling and the override below`,
    }
  if (spec.key === 'ctx' && trainedCtx && Number(raw) > trainedCtx && (!scaling || scaling === 'none'))
    return {
      level: 'warn',
      text: `above the trained ${trained}`,
      detail: `The model was trained for ${trained} tokens: answers degrade past it unless RoPE/YaRN scaling is set`,
    }
  if (spec.key === 'ctv' && !['f16', 'f32', 'bf16'].includes(raw) && getFlag(argv, field('fa').names) === 'off')
    return { level: 'error', text: 'a quantized V cache needs flash attention (on or auto)' }
  return null
}
