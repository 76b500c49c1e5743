import { describe, expect, it } from 'vitest';
import { agentOfCertificate } from './client-identity.js';

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
