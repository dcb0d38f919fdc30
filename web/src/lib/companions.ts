/**
 * What loads beside a model, and how it talks, as flags in its argv: the draft model (speculative
 * decoding), the multimodal projector (vision), the chat template and the reasoning format.
 * Read and written here so that the editor's fields and the raw line never disagree.
 */
import { getFlag, hasSwitch, setFlag, setSwitch } from './args'

export const FLAGS = {
  draft: ['-md', '--model-draft', '--spec-draft-model'],
  draftNgl: ['-ngld', '--spec-draft-ngl', '--gpu-layers-draft', '--n-gpu-layers-draft'],
  draftMax: ['--spec-draft-n-max', '--draft-max', '--draft-n', '--draft'],
  draftMin: ['--spec-draft-n-min', '--draft-min', '--draft-n-min'],
  mmproj: ['-mm', '--mmproj'],
  noMmproj: ['--no-mmproj', '--no-mmproj-auto'],
  noMmprojOffload: ['--no-mmproj-offload'],
  chatTemplate: ['--chat-template'],
  chatTemplateFile: ['--chat-template-file'],
  reasoningFormat: ['--reasoning-format'],
} as const satisfies Record<string, readonly string[]>

const names = (k: keyof typeof FLAGS): string[] => [...FLAGS[k]]

/** llama-server's built-in chat templates (`--chat-template NAME`, b11434's `--help`). */
export const BUILTIN_TEMPLATES = (
  'bailing bailing-think bailing2 chatglm3 chatglm4 chatml command-r deepseek deepseek-ocr deepseek2 deepseek3 ' +
  'exaone-moe exaone3 exaone4 falcon3 gemma gigachat glmedge gpt-oss granite granite-4.0 granite-4.1 grok-2 ' +
  'hunyuan-dense hunyuan-moe hunyuan-vl kimi-k2 llama2 llama2-sys llama2-sys-bos llama2-sys-strip llama3 llama4 ' +
  'megrez minicpm mistral-v1 mistral-v3 mistral-v3-tekken mistral-v7 mistral-v7-tekken monarch openchat orion ' +
  'pangu-embedded phi3 phi4 rwkv-world seed_oss smolvlm solar-open vicuna vicuna-orca yandex zephyr'
).split(' ')

export const REASONING_FORMATS = ['none', 'deepseek', 'deepseek-legacy', 'auto']

// -- draft model ---------------------------------------------------------------------------

export function draftModel(argv: string[]): string | null {
  return getFlag(argv, names('draft')) ?? null
}

/** ``argv`` with this draft model (a library id or path), or none: then its own flags go too. */
export function setDraftModel(argv: string[], value: string | null): string[] {
  let out = setFlag(argv, names('draft'), value || null)
  if (!value) for (const k of ['draftNgl', 'draftMax', 'draftMin'] as const) out = setFlag(out, names(k), null)
  return out
}

// -- projector -----------------------------------------------------------------------------

/** 'auto': the model's own mmproj file (llama-server and the studio pick it); 'none': loaded
 * without one (no images); otherwise the path given with -mm. */
export function projector(argv: string[]): string {
  const path = getFlag(argv, names('mmproj'))
  if (path) return path
  return hasSwitch(argv, names('noMmproj')) ? 'none' : 'auto'
}

export function setProjector(argv: string[], choice: string): string[] {
  const out = setFlag(argv, names('mmproj'), choice === 'auto' || choice === 'none' ? null : choice)
  return setSwitch(out, names('noMmproj'), choice === 'none')
}

export function projectorOffload(argv: string[]): boolean {
  return !hasSwitch(argv, names('noMmprojOffload'))
}

export function setProjectorOffload(argv: string[], on: boolean): string[] {
  return setSwitch(argv, names('noMmprojOffload'), !on)
}

// -- chat template -------------------------------------------------------------------------

export type TemplateMode = 'model' | 'name' | 'text' | 'file'

/** Where the chat template comes from: the model's file, a built-in name, Jinja text given with
 * --chat-template, or a file (--chat-template-file). */
export function chatTemplate(argv: string[]): { mode: TemplateMode; value: string } {
  const file = getFlag(argv, names('chatTemplateFile'))
  if (file !== undefined) return { mode: 'file', value: file }
  const t = getFlag(argv, names('chatTemplate'))
  if (t === undefined) return { mode: 'model', value: '' }
  return { mode: /^[\w.-]+$/.test(t) ? 'name' : 'text', value: t }
}

export function setChatTemplate(argv: string[], mode: TemplateMode, value: string): string[] {
  const v = mode === 'model' || !value ? null : value
  let out = setFlag(argv, names('chatTemplateFile'), mode === 'file' ? v : null)
  out = setFlag(out, names('chatTemplate'), mode === 'name' || mode === 'text' ? v : null)
  return out
}

export function reasoningFormat(argv: string[]): string | null {
  return getFlag(argv, names('reasoningFormat')) ?? null
}

export function setReasoningFormat(argv: string[], value: string | null): string[] {
  return setFlag(argv, names('reasoningFormat'), value || null)
}
