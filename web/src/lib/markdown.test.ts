import { describe, expect, it } from 'vitest'
import { escapeHtml, renderMarkdown } from './markdown'

/** The tags a rendering may hold: nothing else can come out of the renderer. */
const ALLOWED = new Set(['p', 'br', 'strong', 'em', 'code', 'pre', 'ul', 'ol', 'li', 'a', 'div', 'button', 'h3', 'h4', 'h5', 'h6'])
function tags(html: string): string[] {
  return [...html.matchAll(/<\/?([a-zA-Z][\w-]*)/g)].map((m) => m[1].toLowerCase())
}

describe('markdown: safe', () => {
  it('escapes HTML before anything else', () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;')
  })

  it('shows <img onerror> as text, never as an element', () => {
    const html = renderMarkdown('look: <img src=x onerror=alert(1)>')
    expect(html).toBe('<p>look: &lt;img src=x onerror=alert(1)&gt;</p>')
    expect(tags(html)).not.toContain('img')
  })

  it('keeps script, iframe and event handlers inert everywhere: text, lists, code, links', () => {
    const evil = [
      '<script>alert(1)</script>',
      '- <iframe src="javascript:alert(1)"></iframe>',
      '**<svg onload=alert(1)>**',
      '`<b onclick=x>`',
      '```html\n<script>alert(2)</script>\n```',
      '[<img src=x onerror=alert(3)>](https://example.com)',
    ].join('\n\n')
    const html = renderMarkdown(evil)
    for (const t of tags(html)) expect(ALLOWED.has(t), t).toBe(true)
    expect(html).not.toMatch(/<(script|iframe|svg|img|b)\b/i)
    expect(html).not.toMatch(/<[^>]*\son\w+\s*=/i) // no tag carries an event handler
  })

  it('makes links only for http(s): javascript:, data: and vbscript: stay text', () => {
    for (const url of ['javascript:alert(1)', 'data:text/html,<b>x</b>', 'vbscript:msgbox(1)', 'JavaScript:alert(1)']) {
      const html = renderMarkdown(`[click](${url})`)
      expect(html).not.toContain('<a ')
      expect(html).toContain('[click](')
    }
    expect(renderMarkdown('[docs](https://example.com/a?b=1&c=2)')).toBe(
      '<p><a href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="noopener noreferrer nofollow">docs</a></p>',
    )
  })

  it('a quote in a URL cannot leave the href attribute', () => {
    const html = renderMarkdown('[x](https://a.example/"onmouseover="alert(1))')
    const a = /<a ([^>]*)>/.exec(html)
    expect(a).not.toBeNull()
    expect(a![1]).toMatch(/^href="https:\/\/a\.example\/&quot;onmouseover=&quot;alert\(1" target="_blank"/)
  })
})

describe('markdown: rendering', () => {
  it('renders a fenced code block with a copy button and its language, untouched inside', () => {
    const html = renderMarkdown('Here:\n```python\nprint("**not bold**" if a < b else 1)\n```\nDone.')
    expect(html).toBe(
      '<p>Here:</p><div class="md-code"><button type="button" class="md-copy" aria-label="Copy code" data-testid="copy-code">Copy</button>' +
        '<pre><code class="language-python">print(&quot;**not bold**&quot; if a &lt; b else 1)</code></pre></div><p>Done.</p>',
    )
  })

  it('an unclosed fence (still streaming) is code so far', () => {
    expect(renderMarkdown('```\nlet x = 1')).toContain('<pre><code>let x = 1</code></pre>')
  })

  it('inline code, bold and italic', () => {
    expect(renderMarkdown('use `a*b*c` with **care** and *style* or _this_')).toBe(
      '<p>use <code>a*b*c</code> with <strong>care</strong> and <em>style</em> or <em>this</em></p>',
    )
    expect(renderMarkdown('snake_case_name and 2*3*4')).toBe('<p>snake_case_name and 2*3*4</p>')
  })

  it('lists, numbered lists, headings and paragraphs', () => {
    expect(renderMarkdown('# Title\nSome text\nmore\n\n- one\n- **two**\n\n1. first\n2. second')).toBe(
      '<h3>Title</h3><p>Some text<br>more</p><ul><li>one</li><li><strong>two</strong></li></ul><ol><li>first</li><li>second</li></ol>',
    )
  })

  it('headings keep their text and lose closing #s; long runs render at once', () => {
    expect(renderMarkdown('## Title ##')).toBe('<h4>Title</h4>')
    expect(renderMarkdown('# C# ')).toBe('<h3>C#</h3>')
    expect(renderMarkdown('#   spaced   out   ')).toBe('<h3>spaced   out</h3>')
    // these took minutes (a cubic / quadratic backtrack) and froze the tab while a reply streamed
    const spaces = ' '.repeat(20000)
    expect(renderMarkdown('# a' + spaces + 'b')).toBe(`<h3>a${spaces}b</h3>`)
    expect(renderMarkdown('['.repeat(200000))).toBe(`<p>${'['.repeat(200000)}</p>`)
  })

  it('a code span inside a link label', () => {
    expect(renderMarkdown('[`x`](http://e.example)')).toBe(
      '<p><a href="http://e.example" target="_blank" rel="noopener noreferrer nofollow"><code>x</code></a></p>',
    )
  })
})
