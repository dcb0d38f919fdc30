/**
 * What a model is for, as the faces show it: tags in the Library, and how the playground talks to
 * it. A prepared model's `traits` (its flags applied: a projector left out, a template set by
 * hand) win over the facts read from its file; before it is prepared, the facts are all we have.
 */
import type { LocalModel, ModelTraits } from '../api/types'

export type Role = 'chat' | 'embedding' | 'rerank'
export type PlayMode = 'chat' | 'completion' | 'embedding' | 'rerank'

export interface Purpose {
  role: Role
  vision: boolean // takes images now
  projector: boolean // has a projector file (it may be switched off)
  chatTemplate: boolean | null // null: not known (or not a chat model)
  templateFamily: string | null
  templateSet: boolean // a template comes from its configuration, not from its file
  tools: boolean
  draft: string | null
}

/** Whether traits were filled in by preparing the model (a default ModelTraits says nothing). */
function known(t: ModelTraits): boolean {
  return t.vision !== null || t.chat_template !== null || t.role !== 'chat'
}

export function purposeOf(local: LocalModel | null | undefined, traits: ModelTraits | null | undefined): Purpose {
  const f = local?.facts ?? {}
  const fileRole: Role = f.role === 'embedding' || f.role === 'rerank' ? f.role : 'chat'
  const projector = (local?.mmproj?.length ?? 0) > 0
  if (traits && known(traits)) {
    const chat = traits.role === 'chat'
    return {
      role: traits.role,
      vision: traits.vision === true,
      projector: projector || traits.vision === true,
      chatTemplate: chat ? traits.chat_template ?? null : null,
      templateFamily: chat ? traits.template_family ?? null : null,
      templateSet: chat && traits.chat_template === true && f.chat_template === false,
      tools: traits.tools,
      draft: traits.draft ?? null,
    }
  }
  const chat = fileRole === 'chat'
  return {
    role: fileRole,
    vision: chat && projector,
    projector,
    chatTemplate: chat && f.chat_template !== undefined ? f.chat_template : null,
    templateFamily: chat ? f.template_family ?? null : null,
    templateSet: false,
    tools: !!f.tools,
    draft: null,
  }
}

/** How the playground talks to a model: chat, plain completion (no chat template), or the
 * embedding / rerank tryout. */
export function playMode(p: Pick<Purpose, 'role' | 'chatTemplate'>): PlayMode {
  if (p.role !== 'chat') return p.role
  return p.chatTemplate === false ? 'completion' : 'chat'
}

export interface Badge {
  key: string
  label: string
  severity: 'info' | 'warn' | 'secondary' | 'success' | 'contrast'
  icon?: string
  tip: string
}

export const NO_TEMPLATE_TIP =
  'A base model: its file has no chat template, so a chat request gets a generic fallback and ' +
  'rambling answers. Use /v1/completions with a plain prompt (the playground does), or set a chat ' +
  'template in its configuration.'

export function badges(p: Purpose): Badge[] {
  const out: Badge[] = []
  if (p.role === 'embedding')
    out.push({ key: 'embedding', label: 'embedding', severity: 'info', icon: 'pi pi-chart-scatter', tip: 'An embedding model: it answers /v1/embeddings with vectors, not chat' })
  if (p.role === 'rerank')
    out.push({ key: 'rerank', label: 'reranker', severity: 'info', icon: 'pi pi-sort-amount-down', tip: 'A reranker: it answers /v1/rerank with a relevance score per document, not chat' })
  if (p.vision) out.push({ key: 'vision', label: 'vision', severity: 'success', icon: 'pi pi-image', tip: 'Takes images: its multimodal projector (mmproj) is loaded with --mmproj' })
  else if (p.projector && p.role === 'chat')
    out.push({ key: 'vision', label: 'vision off', severity: 'secondary', icon: 'pi pi-image', tip: 'Has a projector (mmproj) file but runs without it (--no-mmproj): no images' })
  if (p.role === 'chat' && p.chatTemplate === false)
    out.push({ key: 'no-template', label: 'no chat template', severity: 'warn', icon: 'pi pi-exclamation-triangle', tip: NO_TEMPLATE_TIP })
  else if (p.templateSet) out.push({ key: 'template', label: 'template set', severity: 'secondary', tip: 'Its chat template is set in its configuration (--chat-template)' })
  else if (p.role === 'chat' && p.templateFamily)
    out.push({ key: 'template', label: p.templateFamily, severity: 'secondary', tip: `Chat template family: ${p.templateFamily} (from the GGUF)` })
  if (p.tools) out.push({ key: 'tools', label: 'tools', severity: 'secondary', icon: 'pi pi-wrench', tip: 'Its chat template renders tool definitions: tool calls work' })
  if (p.draft) out.push({ key: 'draft', label: 'draft', severity: 'contrast', icon: 'pi pi-forward', tip: `Speculative decoding with ${p.draft.split('/').pop()}` })
  return out
}
