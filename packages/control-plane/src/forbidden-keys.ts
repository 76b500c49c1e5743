// Keys that are never data, whichever edge they come in by (REST bodies, gRPC maps): `__proto__`
// and `constructor` would reach an object's prototype if any code ever copied them naively, so
// both edges refuse them, naming the field. Must not know routes or messages.

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor']);

/** The path of the first `__proto__`/`constructor` key in a parsed body (iterative: no stack limit). */
export function forbiddenKeyPath(value: unknown): string | undefined {
  const stack: [unknown, string][] = [[value, '']];
  for (let item = stack.pop(); item; item = stack.pop()) {
    const [v, path] = item;
    if (v === null || typeof v !== 'object') continue;
    const isArray = Array.isArray(v);
    for (const [k, child] of Object.entries(v)) {
      const p = isArray ? `${path}[${k}]` : path ? `${path}.${k}` : k;
      if (!isArray && FORBIDDEN_KEYS.has(k)) return p;
      stack.push([child, p]);
    }
  }
  return undefined;
}
