import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import { docsAssets } from './docs-assets'

// The build ships inside the Python package; `npm run dev` proxies the API of a running studio.
export default defineConfig({
  plugins: [vue(), docsAssets()],
  build: { outDir: '../src/llamastudio/web/dist', emptyOutDir: true, chunkSizeWarningLimit: 2000 },
  server: {
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/gateway': 'http://127.0.0.1:8080',
      '/ws': { target: 'ws://127.0.0.1:8080', ws: true },
    },
  },
  test: { environment: 'node', include: ['src/**/*.test.ts'] },
})
