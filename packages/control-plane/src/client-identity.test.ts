import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentOfCertificate, peerCertificateOf } from './client-identity.js';
import { createPki } from './pki.js';
import { makeCsr, makeSelfSigned } from './test-support.js';

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

  it('refuses a certificate whose subject is not one CN', () => {
    const now = at('2026-01-01T00:00:00Z');
    for (const subject of [
      undefined,
      {},
      { CN: '' },
      { CN: ['agent-1', 'agent-2'] },
      { CN: 'agent-1', O: 'x' },
    ]) {
      expect(() => agentOfCertificate({ subject, valid_to: NOT_AFTER }, now)).toThrow(
        expect.objectContaining({ code: 'UNAUTHENTICATED' }),
      );
    }
  });
});

describe('peerCertificateOf', () => {
  it('reads the agent id and the end of validity of a certificate our CA issued', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bulkhead-identity-'));
    try {
      const pki = await createPki({ dir });
      const { csrPem } = await makeCsr('host-1');
      const { certificatePem } = pki.issueClientCert(await pki.checkCsr(csrPem), 'agent-7');
      const x509 = new X509Certificate(certificatePem);
      const cert = peerCertificateOf(x509);
      expect(cert.subject).toEqual({ CN: 'agent-7' });
      expect(Date.parse(cert.valid_to)).toBe(Date.parse(x509.validTo));
      expect(cert.raw.equals(x509.raw)).toBe(true);
      expect(agentOfCertificate(cert)).toBe('agent-7');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names no agent from a subject our CA does not make: more names, several values, escapes', async () => {
    for (const name of ['agent-1, O=x', 'agent-1, CN=agent-2', 'agent-1+CN=agent-2', 'a\\,b']) {
      const cert = peerCertificateOf(new X509Certificate((await makeSelfSigned(name)).certPem));
      expect(cert.subject).toEqual({});
      expect(() => agentOfCertificate(cert)).toThrow(
        expect.objectContaining({ code: 'UNAUTHENTICATED' }),
      );
    }
  });
});
