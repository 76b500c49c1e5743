import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

// Test double of the control plane for this package's tests; not part of the public API.

export interface Recorded {
  method: string;
  url: string;
  authorization: string | undefined;
  /** The `If-Match` header as sent. */
  ifMatch: string | undefined;
  body: unknown;
}

const WORDS: Record<string, string> = {
  policies: 'policy',
  services: 'service',
  'ip-lists': 'ip-list',
  workloads: 'workload',
};

export type Answer = { status: number; body?: unknown };

/**
 * A control plane stand-in: resources in a map keyed by path, the API's error shape, and a
 * hook to answer a given request differently. Every request is recorded.
 */
export class FakeApi {
  readonly requests: Recorded[] = [];
  readonly store = new Map<string, Record<string, unknown>>();
  override: ((r: Recorded) => Answer | undefined) | undefined;
  private server: Server | undefined;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => {
        text += c.toString();
      });
      req.on('end', () => {
        const r: Recorded = {
          method: req.method ?? '',
          url: req.url ?? '',
          authorization: req.headers.authorization,
          ifMatch: req.headers['if-match'],
          body: text === '' ? undefined : JSON.parse(text),
        };
        this.requests.push(r);
        const answer = this.override?.(r) ?? this.answer(r);
        res.writeHead(answer.status, { 'content-type': 'application/json' });
        res.end(answer.body === undefined ? '' : JSON.stringify(answer.body));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    await new Promise((resolve) => this.server?.close(resolve));
  }

  /** Requests that change something: what apply must send, and must not send. */
  writes(): Array<[string, string]> {
    return this.requests.filter((r) => r.method !== 'GET').map((r) => [r.method, r.url]);
  }

  private answer(r: Recorded): Answer {
    const path = r.url.split('?')[0]!;
    const item = this.store.get(path);
    const notFound = { status: 404, body: { error: { code: 'NOT_FOUND', message: 'not found' } } };
    // As the API: a conditional write to an object that moved on is refused.
    if (r.ifMatch !== undefined && r.method !== 'GET' && r.ifMatch !== `"${item?.version}"`) {
      const [, , plural, name] = path.split('/');
      const word = WORDS[plural ?? ''] ?? plural;
      const sent = r.ifMatch.replace(/"/g, '');
      const message = `${word}/${name} was changed by someone else (version ${item?.version}, you sent ${sent})`;
      return { status: 409, body: { error: { code: 'CONFLICT', message } } };
    }
    // Objects seeded with a version keep counting; others stay without one.
    const bump = (next: Record<string, unknown>) =>
      typeof item?.version === 'number' ? { ...next, version: item.version + 1 } : next;
    switch (r.method) {
      case 'GET': {
        if (item) return { status: 200, body: item };
        const list = [...this.store].filter(([k]) => k.startsWith(`${path}/`)).map(([, v]) => v);
        return list.length > 0 || path.split('/').length === 3
          ? { status: 200, body: list }
          : notFound;
      }
      case 'PUT': {
        const next = bump(r.body as Record<string, unknown>);
        this.store.set(path, next);
        return { status: item ? 200 : 201, body: next };
      }
      case 'PATCH': {
        if (!item) return notFound;
        const patch = r.body as { labels?: unknown; mode?: Record<string, unknown> };
        const next = bump({ ...item, ...patch, mode: { ...(item.mode as object), ...patch.mode } });
        this.store.set(path, next);
        return { status: 200, body: next };
      }
      case 'DELETE':
        if (!item) return notFound;
        this.store.delete(path);
        return { status: 204 };
      default:
        return notFound;
    }
  }
}
