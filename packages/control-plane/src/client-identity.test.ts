import { EventEmitter } from 'node:events';
import type { TLSSocket } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { agentOfCertificate, commonNameOf, createConnectionIdentities } from './client-identity.js';

const NOT_AFTER = 'Nov 30 07:00:00 2027 GMT';
const at = (iso: string) => Date.parse(iso);

describe('agentOfCertificate', () => {
  it('names the CN of a certificate valid now', () => {
    const cert = { subject: { CN: 'agent-1' }, valid_to: NOT_AFTER };
    expect(agentOfCertificate(cert, at('2027-11-30T07:00:00Z'))).toBe('agent-1');
  });

  it('refuses it once expired (a connection may outlive its certificate), and an unreadable date', () => {
    const cert = { subject: { CN: 'agent-1' }, valid_to: NOT_AFTER };
    expect(() => agentOfCertificate(cert, at('2027-11-30T07:00:01Z'))).toThrow(
      expect.objectContaining({ code: 'UNAUTHENTICATED', message: expect.stringMatching(/valid/) }),
    );
    expect(() => agentOfCertificate({ ...cert, valid_to: 'soon' }, 0)).toThrow(/valid/);
  });

  it('refuses a certificate without exactly one CN', () => {
    const now = at('2026-01-01T00:00:00Z');
    for (const subject of [undefined, {}, { CN: '' }, { CN: ['agent-1', 'agent-2'] }]) {
      expect(() => agentOfCertificate({ subject, valid_to: NOT_AFTER }, now)).toThrow(
        expect.objectContaining({ code: 'UNAUTHENTICATED' }),
      );
    }
  });
});

/** A finished TLS connection as the listener hands it over: only what the registry reads. */
function connection(port: number, subject: string | undefined): TLSSocket {
  return Object.assign(new EventEmitter(), {
    remoteAddress: '10.0.0.1',
    remotePort: port,
    authorized: subject !== undefined,
    getPeerX509Certificate: () => subject && { subject, validTo: NOT_AFTER },
  }) as unknown as TLSSocket;
}

describe('createConnectionIdentities', () => {
  it("keeps a verified connection's certificate until it closes, none for an unverified one", () => {
    const ids = createConnectionIdentities();
    const verified = connection(1000, 'CN=agent-1');
    ids.add(verified);
    ids.add(connection(1001, undefined));
    expect(ids.certificateOf('10.0.0.1:1000')).toEqual({
      subject: { CN: 'agent-1' },
      valid_to: NOT_AFTER,
    });
    expect(ids.certificateOf('10.0.0.1:1001')).toBeUndefined();
    verified.emit('close');
    expect(ids.certificateOf('10.0.0.1:1000')).toBeUndefined();
  });

  it('a new connection under the same peer replaces the old one, whose late close leaves it', () => {
    const ids = createConnectionIdentities();
    const old = connection(1000, 'CN=agent-1');
    ids.add(old);
    // Not verified: it must not inherit the certificate of the connection that was there.
    ids.add(connection(1000, undefined));
    expect(ids.certificateOf('10.0.0.1:1000')).toBeUndefined();
    ids.add(connection(1000, 'CN=agent-2'));
    old.emit('close');
    expect(ids.certificateOf('10.0.0.1:1000')?.subject).toEqual({ CN: 'agent-2' });
  });

  it('reads one plain CN only: other names or escaped values are no agent id', () => {
    expect(commonNameOf('CN=3f1c2a9e-0b7d-4c1e-9a55-1d2e3f405162')).toBe(
      '3f1c2a9e-0b7d-4c1e-9a55-1d2e3f405162',
    );
    for (const subject of ['CN=a\nCN=b', 'O=x\nCN=a', 'CN="a,b"', 'CN=', 'cn=a', 'CN=a\n']) {
      expect(commonNameOf(subject)).toBeUndefined();
    }
    const ids = createConnectionIdentities();
    ids.add(connection(1000, 'CN=a\nCN=b'));
    expect(() => agentOfCertificate(ids.certificateOf('10.0.0.1:1000')!, 0)).toThrow(
      expect.objectContaining({ code: 'UNAUTHENTICATED' }),
    );
  });
});
