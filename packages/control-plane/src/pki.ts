import 'reflect-metadata';
import {
  createPrivateKey,
  createPublicKey,
  randomBytes,
  sign,
  verify,
  webcrypto,
  X509Certificate,
} from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import {
  bitString,
  type CsrParts,
  commonName,
  readCsr,
  sequence,
  time,
  tlv,
  unsignedInteger,
} from './der.js';
import { ControlPlaneError } from './errors.js';

// @peculiar/x509 signs through WebCrypto; node:crypto cannot issue certificates itself.
x509.cryptoProvider.set(webcrypto as unknown as ReturnType<typeof x509.cryptoProvider.get>);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
/** AlgorithmIdentifier ecdsa-with-SHA256 (RFC 5758): how the P-256 CA signs. */
const ECDSA_SHA256 = Buffer.from('300a06082a8648ce3d040302', 'hex');
/** [0] EXPLICIT version v3. */
const X509_V3 = Buffer.from('a003020102', 'hex');
/** What every client certificate says of itself: not a CA, signatures, TLS client only. */
const CLIENT_EXTENSIONS = tlv(
  0xa3,
  sequence(
    ...[
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
    ].map((e) => Buffer.from(e.rawData)),
  ),
);
/** SANs the server certificate always carries, so agents can dial by any of these. */
export const DEFAULT_SANS = ['bulkhead-control-plane', 'localhost', '127.0.0.1'];

export interface Pki {
  caPem: string;
  /** PEM key and certificate for the gRPC server. */
  serverKeyPem: string;
  serverCertPem: string;
  /** Issues a client certificate (CN = agent id, 1 year) for a PKCS#10 CSR in PEM. */
  signCsr(csrPem: string, agentId: string): Promise<{ certificatePem: string; serial: string }>;
  /** Returns the agent id of a certificate issued by this CA and valid now; UNAUTHENTICATED otherwise. */
  verifyClientCert(der: Buffer): string;
}

export interface PkiOptions {
  /** Directory holding ca.key (0600), ca.crt, server.key (0600), server.crt. */
  dir: string;
  /** Extra DNS names or IP addresses for the server certificate. */
  sans?: string[];
  now?: () => Date;
}

/** Loads the CA from `dir`, creating it on first start, and issues a fresh server certificate. */
export async function createPki(options: PkiOptions): Promise<Pki> {
  const now = options.now ?? (() => new Date());
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  const caKeyPath = join(options.dir, 'ca.key');
  const caCertPath = join(options.dir, 'ca.crt');

  let caKeys: CryptoKeyPair;
  let caCert: x509.X509Certificate;
  if (await exists(caKeyPath)) {
    caCert = new x509.X509Certificate(await readFile(caCertPath, 'utf8'));
    caKeys = {
      privateKey: await importPrivateKey(await readFile(caKeyPath, 'utf8')),
      publicKey: await caCert.publicKey.export(ALG, ['verify']),
    };
  } else {
    caKeys = await generateKeys();
    caCert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: 'CN=Bulkhead CA',
      notBefore: new Date(now().getTime() - 60_000),
      notAfter: new Date(now().getTime() + 10 * 365 * DAY_MS),
      signingAlgorithm: ALG,
      keys: caKeys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
          true,
        ),
        await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
      ],
    });
    await writeFile(caKeyPath, await exportPrivateKey(caKeys.privateKey), { mode: 0o600 });
    await writeFile(caCertPath, caCert.toString('pem'));
  }

  // Reissued on every start so --tls-san changes take effect; agents trust the CA, not this.
  const sans = [...new Set([...DEFAULT_SANS, ...(options.sans ?? [])])];
  const serverKeys = await generateKeys();
  const serverCert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: 'CN=bulkhead-control-plane',
    issuer: caCert.subject,
    notBefore: new Date(now().getTime() - 60_000),
    notAfter: new Date(now().getTime() + 365 * DAY_MS),
    signingAlgorithm: ALG,
    publicKey: serverKeys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(
        sans.map((v) => (isIP(v) ? { type: 'ip', value: v } : { type: 'dns', value: v })),
      ),
    ],
  });
  const serverKeyPem = await exportPrivateKey(serverKeys.privateKey);
  const serverCertPem = serverCert.toString('pem');
  await writeFile(join(options.dir, 'server.key'), serverKeyPem, { mode: 0o600 });
  await writeFile(join(options.dir, 'server.crt'), serverCertPem);

  const caPem = caCert.toString('pem');
  const caNode = new X509Certificate(caPem);
  // Node's own objects for the per-agent work: synchronous OpenSSL calls, no ASN.1 in JS.
  const caPublicKey = caNode.publicKey;
  const caPrivateKey = createPrivateKey(await exportPrivateKey(caKeys.privateKey));
  const issuer = Buffer.from(caCert.subjectName.toArrayBuffer());

  return {
    caPem,
    serverKeyPem,
    serverCertPem,

    async signCsr(csrPem, agentId) {
      let csr: CsrParts;
      try {
        csr = readCsr(fromPem(csrPem, CSR_LABEL));
      } catch (cause) {
        throw new ControlPlaneError('VALIDATION_FAILED', 'csr_pem is not a PKCS#10 request', {
          details: [{ path: 'csrPem', message: 'not a PEM certificate signing request' }],
          cause,
        });
      }
      // Proof of possession: the requester holds the key it asks us to certify.
      if (!(await verifiesItself(csrPem, csr))) {
        throw new ControlPlaneError('VALIDATION_FAILED', 'csr signature does not verify', {
          details: [{ path: 'csrPem', message: 'signature does not verify' }],
        });
      }
      const serialNumber = serial();
      const t = now().getTime();
      const tbs = sequence(
        X509_V3,
        unsignedInteger(Buffer.from(serialNumber, 'hex')),
        ECDSA_SHA256,
        issuer,
        sequence(time(new Date(t - 60_000)), time(new Date(t + 365 * DAY_MS))),
        commonName(agentId),
        csr.spki,
        CLIENT_EXTENSIONS,
      );
      const der = sequence(tbs, ECDSA_SHA256, bitString(sign('sha256', tbs, caPrivateKey)));
      return { certificatePem: toPem('CERTIFICATE', der), serial: serialNumber };
    },

    verifyClientCert(der) {
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(der);
      } catch (cause) {
        throw new ControlPlaneError('UNAUTHENTICATED', 'client certificate is unreadable', {
          cause,
        });
      }
      if (cert.issuer !== caNode.subject || !cert.verify(caPublicKey)) {
        throw new ControlPlaneError('UNAUTHENTICATED', 'client certificate not issued by this CA');
      }
      const t = now().getTime();
      if (t < Date.parse(cert.validFrom) || t > Date.parse(cert.validTo)) {
        throw new ControlPlaneError('UNAUTHENTICATED', 'client certificate is not valid now');
      }
      const cn = /^CN=(.+)$/m.exec(cert.subject)?.[1];
      if (!cn) throw new ControlPlaneError('UNAUTHENTICATED', 'client certificate has no CN');
      return cn;
    },
  };
}

/** signatureAlgorithm (DER) -> hash, for the ECDSA signatures agents make. */
const ECDSA_HASHES = new Map([
  ['300a06082a8648ce3d040302', 'sha256'],
  ['300a06082a8648ce3d040303', 'sha384'],
  ['300a06082a8648ce3d040304', 'sha512'],
]);

/**
 * The CSR's signature over its own request info. ECDSA (what agents send) is checked with
 * node:crypto directly, which also refuses a malformed key; other algorithms go through
 * @peculiar/x509 and WebCrypto.
 */
async function verifiesItself(pem: string, csr: CsrParts): Promise<boolean> {
  const hash = ECDSA_HASHES.get(csr.algorithm.toString('hex'));
  try {
    if (hash === undefined) return await new x509.Pkcs10CertificateRequest(pem).verify();
    const key = createPublicKey({ key: csr.spki, format: 'der', type: 'spki' });
    return verify(hash, csr.info, { key, dsaEncoding: 'der' }, csr.signature);
  } catch {
    return false;
  }
}

const CSR_LABEL =
  /-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----([A-Za-z0-9+/=\s]*)-----END (?:NEW )?CERTIFICATE REQUEST-----/;

/** The DER inside the one PEM block `label` matches; throws RangeError when there is none. */
function fromPem(pem: string, label: RegExp): Buffer {
  const b64 = label.exec(pem)?.[1];
  if (b64 === undefined) throw new RangeError('no PEM block');
  return Buffer.from(b64.replace(/\s/g, ''), 'base64');
}

function toPem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64.trimEnd()}\n-----END ${label}-----\n`;
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function exportPrivateKey(key: CryptoKey): Promise<string> {
  return toPem('PRIVATE KEY', Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key)));
}

async function importPrivateKey(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  return webcrypto.subtle.importKey('pkcs8', der, ALG, true, ['sign']);
}

function serial(): string {
  // Positive 128-bit serial: clear the top bit so DER never reads it as negative.
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
