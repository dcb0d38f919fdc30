/**
 * Swagger UI and ReDoc shipped with the studio (no CDN: `/docs` and `/redoc` work offline). The
 * files are copied from their npm packages into `dist/docs-assets/` under fixed names, which
 * `llamastudio/api/routes/ui.py` (DOCS_ASSETS) points the pages at.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { Plugin } from 'vite'

const require = createRequire(import.meta.url)
const FILES: Record<string, [string, string]> = {
  'swagger-ui-bundle.js': ['swagger-ui-dist', 'swagger-ui-bundle.js'],
  'swagger-ui.css': ['swagger-ui-dist', 'swagger-ui.css'],
  'favicon-32x32.png': ['swagger-ui-dist', 'favicon-32x32.png'],
  'redoc.standalone.js': ['redoc', 'bundles/redoc.standalone.js'],
}

function packageDir(name: string): string {
  return dirname(require.resolve(`${name}/package.json`))
}

// ReDoc's "API docs by Redocly" footer loads its logo from a CDN: an image that never loads (the
// element hides itself on error), so no page of the studio asks another host for anything
const OFFLINE: Record<string, [string, string][]> = {
  'redoc.standalone.js': [['https://cdn.redoc.ly/redoc/logo-mini.svg', 'data:,']],
}

export function docsAssets(): Plugin {
  return {
    name: 'llamastudio-docs-assets',
    apply: 'build',
    generateBundle() {
      for (const [file, [pkg, path]] of Object.entries(FILES)) {
        let source: string | Buffer = readFileSync(join(packageDir(pkg), path))
        for (const [from, to] of OFFLINE[file] ?? []) {
          const text = source.toString('utf8')
          if (!text.includes(from)) throw new Error(`${pkg}/${path} no longer has ${from}: check docs-assets.ts`)
          source = text.split(from).join(to)
        }
        this.emitFile({ type: 'asset', fileName: `docs-assets/${file}`, source })
      }
    },
  }
}
