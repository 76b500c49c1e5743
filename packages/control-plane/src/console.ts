// Serves the web console (packages/console, built by `npm run build`) at /ui: its static files and
// the headers that keep it honest (a CSP that allows only its own script and style files and calls
// to this API). Owns the /ui prefix; must not serve API data or decide access: the console calls
// the REST API with the operator's token, exactly as the CLI does.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import { ControlPlaneError } from './errors.js';

export const CONSOLE_PREFIX = '/ui';

/** packages/console/dist, found from this file in src/ (tests) and in dist/ alike. */
export const DEFAULT_CONSOLE_DIR = fileURLToPath(new URL('../../console/dist/', import.meta.url));

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The console's files hold no data, so they are served without a token; its API calls are not. */
export const isConsolePath = (path: string): boolean =>
  path === CONSOLE_PREFIX || path.startsWith(`${CONSOLE_PREFIX}/`);

export async function registerConsole(app: FastifyInstance, dir = DEFAULT_CONSOLE_DIR) {
  await app.register(async (ui) => {
    ui.addHook('onSend', async (_req, reply) => {
      reply.header('content-security-policy', CSP);
      reply.header('x-content-type-options', 'nosniff');
      reply.header('referrer-policy', 'no-referrer');
    });
    const index = join(dir, 'index.html');
    if (!existsSync(index)) {
      // The API works without the console; /ui says what is missing instead of a bare 404.
      app.log.warn({ missing: index }, 'web console not built: run `npm run build`');
      const missing = async () => {
        throw new ControlPlaneError(
          'NOT_FOUND',
          `the web console is not built (no ${index}): run npm run build`,
        );
      };
      ui.get(CONSOLE_PREFIX, { schema: { hide: true } }, missing);
      ui.get(`${CONSOLE_PREFIX}/*`, { schema: { hide: true } }, missing);
      return;
    }
    ui.get(CONSOLE_PREFIX, { schema: { hide: true } }, (_req, reply) =>
      reply.redirect(`${CONSOLE_PREFIX}/`),
    );
    await ui.register(fastifyStatic, {
      root: dir,
      prefix: `${CONSOLE_PREFIX}/`,
      decorateReply: false,
      cacheControl: false,
      // Vite names assets by content hash, so they never change; index.html names the current ones.
      setHeaders: (res, path) =>
        res.setHeader(
          'cache-control',
          path.endsWith('.html') ? 'no-cache' : 'public, max-age=31536000, immutable',
        ),
    });
  });
}
