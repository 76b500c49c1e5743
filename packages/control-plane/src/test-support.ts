// Helpers shared by this package's tests (not part of the public API).
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { AgentServiceClient, type EnrollResponse, type TlsIdentity } from '@bulkhead/proto';
import { credentials } from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { pino } from 'pino';
import {
  type ControlPlane,
  type ControlPlaneOptions,
  createControlPlane,
} from './control-plane.js';

const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export const silentLog = pino({ level: 'silent' });

/** `name{labels} value` lines of a `/metrics` scrape, keyed by `name{labels}`. */
export function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^(bulkhead_[^ ]+) (\S+)$/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

/** A started control plane on `dir`: ports the kernel picks, a silent log, then `options`. */
export async function startTestControlPlane(
  dir: string,
  options: Partial<ControlPlaneOptions> = {},
): Promise<ControlPlane> {
  const cp = createControlPlane({
    dataDir: dir,
    apiListen: '127.0.0.1:0',
    grpcListen: '127.0.0.1:0',
    logger: silentLog,
    ...options,
  });
  await cp.start();
  return cp;
}

/**
 * PEM CSRs naming `names`, for one RSA key (each host's own in real life; one key keeps tests
 * quick): checked through WebCrypto, so their verification really awaits.
 */
export async function makeRsaCsrs(names: string[]): Promise<string[]> {
  const rsa = {
    name: 'RSASSA-PKCS1-v1_5',
    hash: 'SHA-256',
    publicExponent: new Uint8Array([1, 0, 1]),
    modulusLength: 2048,
  };
  const keys = (await webcrypto.subtle.generateKey(rsa, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csrs = names.map((cn) =>
    x509.Pkcs10CertificateRequestGenerator.create({
      name: `CN=${cn}`,
      keys,
      signingAlgorithm: rsa,
    }),
  );
  return (await Promise.all(csrs)).map((csr) => csr.toString('pem'));
}

/** A self-signed client certificate naming `cn` (as an attacker makes one) and its key, PEM. */
export async function makeSelfSigned(cn: string): Promise<{ certPem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${cn}`,
    keys,
    signingAlgorithm: alg,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    extensions: [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])],
  });
  return { certPem: cert.toString('pem'), keyPem: await pemKey(keys.privateKey) };
}

async function pemKey(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN PRIVATE KEY-----\n${b64.trimEnd()}\n-----END PRIVATE KEY-----\n`;
}

/** A fresh key pair and a PEM CSR for it, as an agent makes before enrolling. */
export async function makeCsr(cn = 'host-1'): Promise<{ csrPem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${cn}`,
    keys,
    signingAlgorithm: alg,
  });
  return { csrPem: csr.toString('pem'), keyPem: await pemKey(keys.privateKey) };
}

/**
 * A REST caller with the first admin token of a started control plane (or `token`); `json` is
 * the parsed JSON body, the text of any other, undefined for none (204).
 */
export function restClient(
  cp: { apiUrl: string; initialAdminToken: string | undefined },
  token = cp.initialAdminToken,
) {
  return async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${cp.apiUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    // biome-ignore lint/suspicious/noExplicitAny: JSON bodies are checked by the assertions
    const json: any =
      text === ''
        ? undefined
        : res.headers.get('content-type')?.includes('json')
          ? JSON.parse(text)
          : text;
    return { status: res.status, json };
  };
}

/**
 * Enrols an agent the documented way (an enrolment token from REST, Enroll with a CSR) and
 * returns a client holding its real certificate.
 */
export async function enrolAgent(
  cp: { apiUrl: string; initialAdminToken: string | undefined; grpcPort: number; caPem: string },
  hostname: string,
  addresses: string[],
  labels: Record<string, string> = {},
): Promise<{ agentId: string; client: AgentServiceClient; identity: TlsIdentity }> {
  const { token } = (await restClient(cp)('POST', '/v1/enrollment-tokens', {})).json;
  const { csrPem, keyPem } = await makeCsr(hostname);
  const target = `127.0.0.1:${cp.grpcPort}`;
  const anonymous = new AgentServiceClient(target, credentials.createSsl(Buffer.from(cp.caPem)));
  const res = await new Promise<EnrollResponse>((resolve, reject) =>
    anonymous.enroll(
      { bootstrapToken: token, hostname, addresses, labels, csrPem, agentVersion: 't' },
      (err, r) => (err ? reject(err) : resolve(r)),
    ),
  );
  anonymous.close();
  const creds = credentials.createSsl(
    Buffer.from(cp.caPem),
    Buffer.from(keyPem),
    Buffer.from(res.certificatePem),
  );
  return {
    agentId: res.agentId,
    client: new AgentServiceClient(target, creds),
    identity: { caPem: cp.caPem, keyPem, certPem: res.certificatePem },
  };
}
