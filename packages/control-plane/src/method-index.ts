// Which methods the API serves at a concrete path, so that a known path under an unknown
// method is a 405 naming the allowed ones rather than a 404. Fastify's router answers only
// "this method at this path"; this index must not route anything itself.

export interface MethodIndex {
  /** A registered route: its method(s) and URL pattern (`/v1/workloads/:name`). */
  add(method: string | string[], url: string): void;
  /** The methods served at `path` (no query string), sorted; empty for an unknown path. */
  allowed(path: string): string[];
}

export function createMethodIndex(): MethodIndex {
  const routes: { methods: string[]; pattern: RegExp }[] = [];
  return {
    add(method, url) {
      const source = url
        .split('/')
        .map((seg) => (seg.startsWith(':') ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
        .join('/');
      routes.push({ methods: [method].flat(), pattern: new RegExp(`^${source}/?$`) });
    },
    allowed(path) {
      const found = routes.filter((r) => r.pattern.test(path)).flatMap((r) => r.methods);
      return [...new Set(found)].sort();
    },
  };
}
