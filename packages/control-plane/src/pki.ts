import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomBytes,
  sign,
  verify,
  webcrypto,
  X509Certificate,
} from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { parseAddress } from '@bulkhead/policy';
import {
  bitString,
  type CsrParts,
  commonName,
  elements,
  readCsr,
  sequence,
  time,
  tlv,
  unsignedInteger,
} from './der.js';
import { ControlPlaneError } from './errors.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type Peculiar = typeof import('@peculiar/x509');

let peculiarLoaded: Promise<Peculiar> | undefined;
/**
 * @peculiar/x509, only where node:crypto cannot do the work (creating the CA, CSRs in other
 * algorithms than ECDSA): loading it cost every start ~0.4 s of CPU. It signs through WebCrypto.
 */
function peculiar(): Promise<Peculiar> {
  peculiarLoaded ??= (async () => {
    await import('reflect-metadata');
    const x509 = await import('@peculiar/x509');
    x509.cryptoProvider.set(webcrypto as unknown as ReturnType<typeof x509.cryptoProvider.get>);
    return x509;
  })();
  return peculiarLoaded;
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
/** AlgorithmIdentifier ecdsa-with-SHA256 (RFC 5758): how the P-256 CA signs. */
const ECDSA_SHA256 = Buffer.from('300a06082a8648ce3d040302', 'hex');
/** [0] EXPLICIT version v3. */
const X509_V3 = Buffer.from('a003020102', 'hex');
const hex = (h: string) => Buffer.from(h, 'hex');
/** basicConstraints cA FALSE and keyUsage digitalSignature, both critical (RFC 5280 4.2.1). */
const LEAF = [hex('300c0603551d130101ff04023000'), hex('300e0603551d0f0101ff040403020780')];
/** extKeyUsage id-kp-clientAuth / id-kp-serverAuth. */
const CLIENT_AUTH = hex('30130603551d25040c300a06082b06010505070302');
const SERVER_AUTH = hex('30130603551d25040c300a06082b06010505070301');
const extensions = (...e: Buffer[]) => tlv(0xa3, sequence(...e));
/** What every client certificate says of itself: not a CA, signatures, TLS client only. */
const CLIENT_EXTENSIONS = extensions(...LEAF, CLIENT_AUTH);

/** subjectAltName: dNSName [2] or iPAddress [7] (4 or 16 bytes) per name. */
function subjectAltNames(names: readonly string[]): Buffer {
  const general = names.map((v) => {
    const ip = isIP(v) ? parseAddress(v) : undefined;
    if (!ip) return tlv(0x82, Buffer.from(v, 'ascii'));
    const bytes = Buffer.alloc(ip.family === 4 ? 4 : 16);
    let rest = ip.value;
    for (let i = bytes.length - 1; i >= 0; i--, rest >>= 8n) bytes[i] = Number(rest & 0xffn);
    return tlv(0x87, bytes);
  });
  return sequence(hex('0603551d11'), tlv(0x04, sequence(...general)));
}

/** The subject Name of a certificate (DER), whole: the issuer of what the CA signs. */
function subjectOf(certDer: Buffer): Buffer {
  const fields = elements(elements(certDer)[0]!);
  const v = fields[0]?.[0] === 0xa0 ? 1 : 0;
  return fields[v + 4]!;
}

/** SANs the server certificate always carries, so agents can dial by any of these. */
export const DEFAULT_SANS = ['bulkhead-control-plane', 'localhost', '127.0.0.1'];

export interface Pki {
  caPem: string;
  /** PEM key and certificate for the gRPC server. */
  serverKeyPem: string;
  serverCertPem: string;
  /**
   * The key the gRPC listener encrypts TLS session tickets with (48 bytes, Node's `ticketKeys`),
   * derived from the CA key: the same after a restart, so agents resume their sessions instead of
   * a full handshake each (tls-sessions in docs/design-notes.md), and new with a new CA, so no
   * session outlives the CA that verified it. Anyone who could read it could read the CA key.
   */
  sessionTicketKey: Buffer;
  /**
   * Reads a PKCS#10 CSR in PEM and checks its proof of possession (its signature verifies with
   * the key it asks to certify); VALIDATION_FAILED otherwise.
   */
  checkCsr(csrPem: string): Promise<CheckedCsr>;
  /**
   * Issues a client certificate (CN = agent id, 1 year) for a checked CSR's key. Synchronous, so
   * that enrolment issues it inside the transaction that admits the agent.
   */
  issueClientCert(csr: CheckedCsr, agentId: string): { certificatePem: string; serial: string };
}

/** A CSR whose signature verified with its own key: only checkCsr makes one. */
export interface CheckedCsr {
  readonly spki: Buffer;
  readonly [checked]: true;
}
declare const checked: unique symbol;

export interface PkiOptions {
  /** Directory holding ca.key (0600), ca.crt, server.key (0600), server.crt. */
  dir: string;
  /** Extra DNS names or IP addresses for the server certificate. */
  sans?: string[];
  now?: () => Date;
}

/**
 * The listener's session ticket key (Pki.sessionTicketKey), from the CA's private scalar (JWK
 * `d`) itself, not an encoding of the key that another OpenSSL might write differently.
 */
function ticketKeyOf(caKey: KeyObject): Buffer {
  const d = caKey.export({ format: 'jwk' }).d;
  if (!d) throw new Error('the CA key has no private part');
  const ikm = Buffer.from(d, 'base64url');
  return Buffer.from(hkdfSync('sha256', ikm, Buffer.alloc(0), 'bulkhead session tickets v1', 48));
}

/** Loads the CA from `dir`, creating it on first start, and issues a fresh server certificate. */
export async function createPki(options: PkiOptions): Promise<Pki> {
  const now = options.now ?? (() => new Date());
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  const caKeyPath = join(options.dir, 'ca.key');
  const caCertPath = join(options.dir, 'ca.crt');

  if (!(await exists(caKeyPath))) await createCa(caKeyPath, caCertPath, now());
  const caPem = await readFile(caCertPath, 'utf8');
  const caNode = new X509Certificate(caPem);
  // Node's own objects for the per-certificate work: synchronous OpenSSL calls, no ASN.1 in JS.
  const caPrivateKey = createPrivateKey(await readFile(caKeyPath, 'utf8'));
  const issuer = subjectOf(caNode.raw);

  /** A certificate signed by the CA, valid from a minute ago for `days`. */
  function issue(subject: Buffer, spki: Buffer, days: number, exts: Buffer) {
    const serialNumber = serial();
    const t = now().getTime();
    const tbs = sequence(
      X509_V3,
      unsignedInteger(Buffer.from(serialNumber, 'hex')),
      ECDSA_SHA256,
      issuer,
      sequence(time(new Date(t - 60_000)), time(new Date(t + days * DAY_MS))),
      subject,
      spki,
      exts,
    );
    const der = sequence(tbs, ECDSA_SHA256, bitString(sign('sha256', tbs, caPrivateKey)));
    return { certificatePem: toPem('CERTIFICATE', der), serial: serialNumber };
  }

  // Reissued on every start so --tls-san changes take effect; agents trust the CA, not this.
  const sans = [...new Set([...DEFAULT_SANS, ...(options.sans ?? [])])];
  const serverKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const serverKeyPem = serverKeys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const serverCertPem = issue(
    commonName('bulkhead-control-plane'),
    serverKeys.publicKey.export({ type: 'spki', format: 'der' }),
    365,
    extensions(...LEAF, SERVER_AUTH, subjectAltNames(sans)),
  ).certificatePem;
  await writeFile(join(options.dir, 'server.key'), serverKeyPem, { mode: 0o600 });
  await writeFile(join(options.dir, 'server.crt'), serverCertPem);

  return {
    caPem,
    serverKeyPem,
    serverCertPem,
    sessionTicketKey: ticketKeyOf(caPrivateKey),

    async checkCsr(csrPem) {
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
      return { spki: csr.spki } as CheckedCsr;
    },

    issueClientCert: (csr, agentId) => issue(commonName(agentId), csr.spki, 365, CLIENT_EXTENSIONS),
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
    if (hash === undefined)
      return await new (await peculiar()).Pkcs10CertificateRequest(pem).verify();
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

/** A new self-signed P-256 CA (10 years) in the two files, its key 0600. */
async function createCa(keyPath: string, certPath: string, at: Date): Promise<void> {
  const x509 = await peculiar();
  const keys = await generateKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: 'CN=Bulkhead CA',
    notBefore: new Date(at.getTime() - 60_000),
    notAfter: new Date(at.getTime() + 10 * 365 * DAY_MS),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  await writeFile(keyPath, await exportPrivateKey(keys.privateKey), { mode: 0o600 });
  await writeFile(certPath, cert.toString('pem'));
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
