import 'reflect-metadata';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createPki } from './pki.js';
import { makeCsr, makeRsaCsrs } from './test-support.js';

describe('pki', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bh-pki-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('creates the CA once, key 0600, and reuses it on the next start', async () => {
    const a = await createPki({ dir: join(dir, 'ca') });
    expect(statSync(join(dir, 'ca', 'ca.key')).mode & 0o777).toBe(0o600);
    const b = await createPki({ dir: join(dir, 'ca') });
    expect(b.caPem).toBe(a.caPem);
    // Sessions resume across the restart: the same ticket key, from the same CA key.
    expect(b.sessionTicketKey).toHaveLength(48);
    expect(b.sessionTicketKey.equals(a.sessionTicketKey)).toBe(true);
    // Another CA, another key: its sessions are not ours.
    const other = await createPki({ dir: join(dir, 'other') });
    expect(other.sessionTicketKey.equals(a.sessionTicketKey)).toBe(false);
  });

  it('puts the default and extra SANs in the server certificate', async () => {
    const pki = await createPki({ dir, sans: ['cp.example.internal', '10.9.8.7'] });
    const san = new X509Certificate(pki.serverCertPem).subjectAltName ?? '';
    for (const want of [
      'DNS:bulkhead-control-plane',
      'DNS:localhost',
      'IP Address:127.0.0.1',
      'DNS:cp.example.internal',
      'IP Address:10.9.8.7',
    ]) {
      expect(san).toContain(want);
    }
    expect(
      new X509Certificate(pki.serverCertPem).verify(new X509Certificate(pki.caPem).publicKey),
    ).toBe(true);
  });

  it('signs a CSR into a client certificate whose CN is the agent id', async () => {
    const pki = await createPki({ dir });
    const { csrPem } = await makeCsr('whatever-the-host-says');
    const { certificatePem, serial } = pki.issueClientCert(await pki.checkCsr(csrPem), 'agent-123');
    expect(serial).toMatch(/^[0-9a-f]{32}$/);
    const cert = new X509Certificate(certificatePem);
    expect(cert.subject).toBe('CN=agent-123');
  });

  it('issues a leaf for TLS clients only, for a year, under the CA, with the CSR key', async () => {
    const t = Date.parse('2026-11-30T04:00:00Z');
    const pki = await createPki({ dir, now: () => new Date(t) });
    const { csrPem, keyPem } = await makeCsr();
    const cert = new X509Certificate(
      pki.issueClientCert(await pki.checkCsr(csrPem), 'agent-1').certificatePem,
    );
    const ca = new X509Certificate(pki.caPem);
    expect(cert.checkIssued(ca)).toBe(true);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(Date.parse(cert.validFrom)).toBe(t - 60_000);
    expect(Date.parse(cert.validTo)).toBe(t + 365 * 86_400_000);
    expect(cert.checkPrivateKey(createPrivateKey(keyPem))).toBe(true);
  });

  it("refuses a CSR whose signature is not its key holder's", async () => {
    const pki = await createPki({ dir });
    const { csrPem } = await makeCsr('host-a');
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const at = der.indexOf('host-a');
    der[at + 5] = 'b'.charCodeAt(0); // the signed request now names host-b
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(pki.checkCsr(forged)).rejects.toMatchObject({
      code: 'VALIDATION_FAILED',
      message: 'csr signature does not verify',
    });
  });

  it('still signs a CSR made with another algorithm (RSA), checked through WebCrypto', async () => {
    const pki = await createPki({ dir });
    const [csr] = await makeRsaCsrs(['h']);
    const { certificatePem } = pki.issueClientCert(await pki.checkCsr(csr!), 'agent-rsa');
    expect(new X509Certificate(certificatePem).publicKey.asymmetricKeyType).toBe('rsa');
  });

  it('rejects a malformed CSR as a validation error', async () => {
    const pki = await createPki({ dir });
    await expect(pki.checkCsr('not a csr')).rejects.toMatchObject({
      code: 'VALIDATION_FAILED',
    });
  });
});
