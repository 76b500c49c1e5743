import { describe, expect, it } from 'vitest';
import { ConsoleError, createConsoleApi, type TokenStore } from './api.js';

function memory(): TokenStore & { items: Map<string, string> } {
  const items = new Map<string, string>();
  return {
    items,
    getItem: (k) => items.get(k) ?? null,
    setItem: (k, v) => void items.set(k, v),
    removeItem: (k) => void items.delete(k),
  };
}

/** A fetch that answers from a table and records what it was asked. */
function fakeFetch(answers: Record<string, [number, unknown]>) {
  const calls: { url: string; method: string; headers: Record<string, string>; body?: string }[] =
    [];
  const fetchFn = (async (url: string, init: RequestInit) => {
    calls.push({
      url,
      method: String(init.method),
      headers: init.headers as Record<string, string>,
      body: init.body as string | undefined,
    });
    const [status, body] = answers[`${init.method} ${url}`] ?? [
      404,
      { error: { code: 'NOT_FOUND', message: 'no' } },
    ];
    return new Response(JSON.stringify(body), { status });
  }) as typeof fetch;
  return { calls, fetchFn };
}

describe('console API client', () => {
  it('keeps a token only once the API accepts it, and sends it as the CLI does', async () => {
    const storage = memory();
    const { calls, fetchFn } = fakeFetch({
      'GET /v1/agents': [200, []],
      'POST /v1/impact': [200, { summary: {} }],
    });
    const api = createConsoleApi(storage, fetchFn);
    expect(api.token).toBeNull();
    await api.login('s3cret');
    expect(api.token).toBe('s3cret');
    await api.post('/v1/impact', { since: 'x' });
    expect(calls.map((c) => c.headers.authorization)).toEqual(['Bearer s3cret', 'Bearer s3cret']);
    expect(calls[1]).toMatchObject({
      method: 'POST',
      body: '{"since":"x"}',
      headers: { 'content-type': 'application/json' },
    });
    api.logout();
    expect(storage.items.size).toBe(0);
  });

  it('refuses a bad token without keeping it, with the API error code', async () => {
    const storage = memory();
    const { fetchFn } = fakeFetch({
      'GET /v1/agents': [401, { error: { code: 'UNAUTHENTICATED', message: 'unknown token' } }],
    });
    const api = createConsoleApi(storage, fetchFn);
    const err = await api.login('wrong').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConsoleError);
    expect(err).toMatchObject({ code: 'UNAUTHENTICATED', status: 401, message: 'unknown token' });
    expect(api.token).toBeNull();
  });

  it('forgets the token when the API stops accepting it (revoked, expired)', async () => {
    const storage = memory();
    storage.setItem('bulkhead.apiToken', 'old');
    const { fetchFn } = fakeFetch({
      'GET /v1/flows': [401, { error: { code: 'UNAUTHENTICATED', message: 'revoked' } }],
      'GET /v1/map': [403, { error: { code: 'FORBIDDEN', message: 'no' } }],
    });
    const api = createConsoleApi(storage, fetchFn);
    let signedOut = 0;
    api.onLogout(() => signedOut++);
    await expect(api.get('/v1/map')).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect([api.token, signedOut]).toEqual(['old', 0]);
    await expect(api.get('/v1/flows')).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    expect([api.token, signedOut]).toEqual([null, 1]);
  });
});
