/**
 * A small, safe Markdown renderer for model replies: the text is HTML-escaped FIRST, then code
 * fences, inline code, headings, bold/italic, lists and links are turned into a fixed set of tags.
 * Nothing the model writes can become markup of its own: `<img onerror=…>` stays text, and links
 * are made only for http(s) URLs (a `javascript:` link stays text). The result is meant for
 * `v-html`; an unclosed fence (a reply still streaming) renders as code so far.
 *
 * A code block is `<div class="md-code"><button class="md-copy" …>Copy</button><pre><code>`; the
 * component showing it copies the `<code>` text when the button is clicked (event delegation).
 */

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c])
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)[^\n]*$/

/** Markdown → HTML (see the module comment for what is safe and why). */
export function renderMarkdown(source: string): string {
  const lines = escapeHtml(source.replace(/\r\n?/g, '\n')).split('\n')
  const out: string[] = []
  let para: string[] = []
  let list: { tag: 'ul' | 'ol'; items: string[] } | null = null

  const flushPara = () => {
    if (para.length) out.push(`<p>${para.map(inline).join('<br>')}</p>`)
    para = []
  }
  const flushList = () => {
    if (list) out.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i)}</li>`).join('')}</${list.tag}>`)
    list = null
  }
  const flush = () => {
    flushPara()
    flushList()
  }

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]
    const fence = FENCE.exec(line)
    if (fence) {
      flush()
      const marker = fence[1]
      const code: string[] = []
      i++
      while (i < lines.length && !lines[i].trim().startsWith(marker)) code.push(lines[i++])
      out.push(codeBlock(code.join('\n'), fence[2]))
      continue
    }
    // no `(.*?)\s*#*\s*$`: its backtracking is cubic in a run of spaces (a reply line of 4000
    // spaces took 7 s, and the reply is rendered again at every streamed piece)
    const heading = /^ {0,3}(#{1,6})[ \t]+(.*)$/.exec(line)
    const bullet = /^\s*[-*+]\s+(.*)$/.exec(line)
    const numbered = /^\s*\d{1,9}[.)]\s+(.*)$/.exec(line)
    if (heading) {
      flush()
      const level = Math.min(6, heading[1].length + 2) // h3…h6: replies sit inside a card
      out.push(`<h${level}>${inline(headingText(heading[2]))}</h${level}>`)
    } else if (bullet || numbered) {
      flushPara()
      const tag = bullet ? 'ul' : 'ol'
      if (list && list.tag !== tag) flushList()
      list ??= { tag, items: [] }
      list.items.push((bullet ?? numbered)![1])
    } else if (!line.trim()) {
      flush()
    } else if (list && /^\s{2,}\S/.test(line)) {
      list.items[list.items.length - 1] += ' ' + line.trim() // a list item's continuation
    } else {
      flushList()
      para.push(line)
    }
  }
  flush()
  return out.join('')
}

/** A heading's text without its closing `#`s (`## Title ##`) and the spaces around. */
function headingText(text: string): string {
  const trimmed = text.trimEnd()
  let end = trimmed.length
  while (end > 0 && trimmed[end - 1] === '#') end-- // no regex: `#+$` backtracks over a long run
  const bare = trimmed.slice(0, end)
  return (bare === '' || bare.endsWith(' ') || bare.endsWith('\t') ? bare : trimmed).trim()
}

function codeBlock(code: string, lang: string): string {
  const cls = lang ? ` class="language-${lang.replace(/[^\w+#.-]/g, '')}"` : ''
  return (
    '<div class="md-code"><button type="button" class="md-copy" aria-label="Copy code" data-testid="copy-code">Copy</button>' +
    `<pre><code${cls}>${code}</code></pre></div>`
  )
}

/** Inline markup of one (already escaped) line: code spans first (their text is left alone),
 * then links, bold and italic. */
function inline(text: string): string {
  const spans: string[] = []
  const hold = (html: string) => `\u0000${spans.push(html) - 1}\u0000`
  let s = text.replace(/\u0000/g, '')
  s = s.replace(/`([^`]+)`/g, (_, code: string) => hold(`<code>${code}</code>`))
  // the label stops at a `[` too: each scan ends at the next one (linear; `[[[[…` was quadratic)
  s = s.replace(/\[([^[\]]+)\]\((https?:\/\/[^\s)]+)\)/g, (_, label: string, url: string) =>
    hold(`<a href="${url}" target="_blank" rel="noopener noreferrer nofollow">${label}</a>`),
  )
  s = s.replace(/\*\*(?=\S)([^*]*?\S)\*\*/g, '<strong>$1</strong>')
  s = s.replace(/__(?=\S)([^_]*?\S)__/g, '<strong>$1</strong>')
  s = s.replace(/(^|[^*\w])\*(?=\S)([^*]*?\S)\*(?![*\w])/g, '$1<em>$2</em>')
  s = s.replace(/(^|[^_\w])_(?=\S)([^_]*?\S)_(?![_\w])/g, '$1<em>$2</em>')
  for (let depth = 0; depth < 3 && s.includes('\u0000'); depth++) {
    s = s.replace(/\u0000(\d+)\u0000/g, (_, n: string) => spans[Number(n)]) // a code span in a link label: twice
  }
  return s
}
