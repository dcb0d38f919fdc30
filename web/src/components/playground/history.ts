/** The chat playground's memory: one conversation and its settings per model, kept in the
 * browser's localStorage (it survives navigation and reloads). Images are kept when they fit; when
 * the browser's quota is reached they are dropped from the stored copy, never the text. */

export interface Msg {
  role: 'user' | 'assistant'
  content: string
  image?: string // a data URI
  stopped?: boolean // the reply was cut short by Stop
  tokens?: number // from the final chunk's `timings` (llama-server) or `usage`
  speed?: number // tokens per second, from `timings.predicted_per_second`
  ttft?: number // ms from sending to the first token, measured here
}

export interface ChatSettings {
  system: string // the system prompt ('' : none)
  temperature: number | null // null: the engine's default
  top_p: number | null
  max_tokens: number
}

export interface StoredChat {
  messages: Msg[]
  settings: ChatSettings
}

export const DEFAULT_SETTINGS: ChatSettings = { system: '', temperature: null, top_p: null, max_tokens: 256 }
const PREFIX = 'llamastudio.chat.'

export function loadChat(model: string): StoredChat {
  try {
    const raw = JSON.parse(localStorage.getItem(PREFIX + model) ?? 'null')
    if (raw && Array.isArray(raw.messages)) {
      const messages = (raw.messages as Msg[]).filter((m) => (m.role === 'user' || m.role === 'assistant') && typeof m.content === 'string')
      return { messages, settings: { ...DEFAULT_SETTINGS, ...(raw.settings ?? {}) } }
    }
  } catch {
    // unreadable (another version, edited by hand): start afresh
  }
  return { messages: [], settings: { ...DEFAULT_SETTINGS } }
}

export function saveChat(model: string, chat: StoredChat): void {
  const key = PREFIX + model
  try {
    localStorage.setItem(key, JSON.stringify(chat))
  } catch {
    try {
      const messages = chat.messages.map(({ image: _image, ...m }) => m) // over the quota: without images
      localStorage.setItem(key, JSON.stringify({ ...chat, messages }))
    } catch {
      // still too big: nothing stored; the conversation stays on screen
    }
  }
}

/** Copy text to the clipboard (the Clipboard API, or a hidden textarea where it is refused). */
export async function copyText(text: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text)
    return
  } catch {
    const area = document.createElement('textarea')
    area.value = text
    area.style.position = 'fixed'
    area.style.opacity = '0'
    document.body.appendChild(area)
    area.select()
    document.execCommand('copy')
    area.remove()
  }
}
