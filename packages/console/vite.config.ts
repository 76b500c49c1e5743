import { defineConfig } from 'vite';

// Served by the control plane under /ui with a CSP of `script-src 'self'`: every script and
// style is a file (no inline code, no data: URLs), and the module preload polyfill (an inline
// helper in older browsers) is left out.
export default defineConfig({
  base: '/ui/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
});
