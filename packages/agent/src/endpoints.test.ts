import { describe, expect, it } from 'vitest';
import { createEndpoints, type Lookup, parseControlPlanes } from './endpoints.js';

describe('parseControlPlanes', () => {
  it('takes repeated and comma-separated entries, IPv6 in brackets', () => {
    expect(parseControlPlanes(['a.example:1,b.example:2', '[fd00::1]:3'])).toEqual([
      { host: 'a.example', port: 1 },
      { host: 'b.example', port: 2 },
      { host: 'fd00::1', port: 3 },
    ]);
  });
  it.each([[[]], [['a:1,']], [['a']], [['a:0']]])('refuses %j', (v) => {
    expect(() => parseControlPlanes(v)).toThrow(/--control-plane/);
  });
});

describe('createEndpoints', () => {
  const dns = (table: Record<string, string[]>): Lookup & { calls: string[] } => {
    const calls: string[] = [];
    return Object.assign(
      async (host: string) => {
        calls.push(host);
        const a = table[host];
        if (!a?.length) throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
        return a;
      },
      { calls },
    );
  };

  it('goes round all addresses of all entries, resolving names again for every round', async () => {
    const table = { 'cp.example': ['10.0.0.1', 'fd00::1'] };
    const lookup = dns(table);
    const e = createEndpoints(['cp.example:8443', '10.9.9.9:8443'], { lookup });
    const targets = async (n: number) => {
      const out: string[] = [];
      for (let i = 0; i < n; i++) out.push((await e.next()).target);
      return out;
    };
    expect(await targets(3)).toEqual(['10.0.0.1:8443', '[fd00::1]:8443', '10.9.9.9:8443']);
    table['cp.example'] = ['10.0.0.2'];
    expect(await targets(2)).toEqual(['10.0.0.2:8443', '10.9.9.9:8443']);
    expect(lookup.calls).toEqual(['cp.example', 'cp.example']);
  });

  it('after a stream was up, resolves again at once and starts with the entry that worked', async () => {
    const table = { 'a.example': ['10.0.0.1'], 'b.example': ['10.0.0.2'] };
    const e = createEndpoints(['a.example:1', 'b.example:2'], { lookup: dns(table) });
    await e.next();
    const b = await e.next();
    expect(b).toMatchObject({ entry: 'b.example:2', address: '10.0.0.2', port: 2 });
    e.connected(b);
    table['b.example'] = ['10.0.0.3'];
    expect((await e.next()).target).toBe('10.0.0.3:2');
    expect((await e.next()).target).toBe('10.0.0.1:1');
  });

  it('skips an entry that does not resolve; RESOLVE_FAILED when none does', async () => {
    const table: Record<string, string[]> = { 'a.example': [] };
    const e = createEndpoints(['a.example:1', 'b.example:2'], { lookup: dns(table) });
    await expect(e.next()).rejects.toMatchObject({ code: 'RESOLVE_FAILED' });
    table['b.example'] = ['10.0.0.2'];
    expect((await e.next()).target).toBe('10.0.0.2:2');
    expect(await e.resolveAll()).toEqual([
      { entry: 'b.example:2', address: '10.0.0.2', port: 2, target: '10.0.0.2:2' },
    ]);
  });
});
