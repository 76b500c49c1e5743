import { readFileSync } from 'node:fs';

/**
 * This package's version. Read relative to this module, which sits at the top of `dist/`, as
 * the bundled binary `dist/main.js` does (package.json "bundle"): the path holds for both.
 */
export const VERSION: string = JSON.parse(
  readFileSync(new URL('../package.json', import.meta.url), 'utf8'),
).version;
