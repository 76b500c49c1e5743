import { describe, expect, it } from 'vitest';
import { createClientIdentities, type PeerCertificate } from './client-identity.js';
import { ControlPlaneError } from './errors.js';

const cert = (n: number, validTo = 'Nov 30 07:00:00 2027 GMT'): PeerCertificate => ({
  raw: Buffer.from([n]),
  fingerprint256: `AA:${n}`,
  valid_to: validTo,
});

/** A verify that names agent-<byte> and counts its calls; `refused` bytes fail it. */
function verifier(refused = new Set<number>()) {
  const calls: number[] = [];
  return {
    calls,
    verify(der: Buffer) {
      calls.push(der[0]!);
      if (refused.has(der[0]!)) throw new ControlPlaneError('UNAUTHENTICATED', 'refused');
      return `agent-${der[0]}`;
    },
  };
}

describe('createClientIdentities', () => {
  it('verifies a certificate once, then answers from its fingerprint', () => {
    const v = verifier();
    const ids = createClientIdentities({ verify: v.verify });
    expect([ids.agentOf(cert(1)), ids.agentOf(cert(1)), ids.agentOf(cert(2))]).toEqual([
      'agent-1',
      'agent-1',
      'agent-2',
    ]);
    expect(v.calls).toEqual([1, 2]);
  });

  it('never remembers a refused certificate', () => {
    const v = verifier(new Set([3]));
    const ids = createClientIdentities({ verify: v.verify });
    expect(() => ids.agentOf(cert(3))).toThrow('refused');
    expect(() => ids.agentOf(cert(3))).toThrow('refused');
    expect(v.calls).toEqual([3, 3]);
  });

  it('verifies again once the certificate has expired (and the full check refuses it)', () => {
    let now = Date.parse('2027-11-30T06:59:59Z');
    const refused = new Set<number>();
    const v = verifier(refused);
    const ids = createClientIdentities({ verify: v.verify, now: () => now });
    expect(ids.agentOf(cert(4))).toBe('agent-4');
    now += 2000;
    refused.add(4);
    expect(() => ids.agentOf(cert(4))).toThrow('refused');
    expect(v.calls).toEqual([4, 4]);
  });

  it('holds at most maxEntries: the oldest is verified again', () => {
    const v = verifier();
    const ids = createClientIdentities({ verify: v.verify, maxEntries: 2 });
    for (const n of [1, 2, 3, 3, 2, 1]) ids.agentOf(cert(n));
    expect(v.calls).toEqual([1, 2, 3, 1]);
  });
});
