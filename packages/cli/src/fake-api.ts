import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

// Test double of the control plane for this package's tests; not part of the public API.

export interface Recorded {
  method: string;
  url: string;
  authorization: string | undefined;
  body: unknown;
}

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
    switch (r.method) {
      case 'GET': {
        if (item) return { status: 200, body: item };
        const list = [...this.store].filter(([k]) => k.startsWith(`${path}/`)).map(([, v]) => v);
        return list.length > 0 || path.split('/').length === 3
          ? { status: 200, body: list }
          : notFound;
      }
      case 'PUT':
        this.store.set(path, r.body as Record<string, unknown>);
        return { status: item ? 200 : 201, body: r.body };
      case 'PATCH': {
        if (!item) return notFound;
        const patch = r.body as { labels?: unknown; mode?: Record<string, unknown> };
        const next = { ...item, ...patch, mode: { ...(item.mode as object), ...patch.mode } };
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
