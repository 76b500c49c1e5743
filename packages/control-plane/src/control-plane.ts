import { mkdir, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { type Logger, pino } from 'pino';
import { createApi } from './api.js';
import { createEngine, type Engine } from './engine.js';
import { ControlPlaneError } from './errors.js';
import { type AgentGrpcServer, createGrpcServer } from './grpc.js';
import { createPki } from './pki.js';
import { createStore, type Store } from './store.js';
import { createStreamRegistry } from './streams.js';

export interface ControlPlaneOptions {
  /** Holds bulkhead.db, ca/ and initial-admin-token. */
  dataDir: string;
  /** Default `<dataDir>/bulkhead.db`. */
  dbPath?: string;
  /** HOST:PORT, default 127.0.0.1:8080; port 0 picks a free port. */
  apiListen?: string;
  /** HOST:PORT, default 0.0.0.0:8443; port 0 picks a free port. */
  grpcListen?: string;
  /** Extra DNS names / IPs for the gRPC server certificate. */
  tlsSans?: string[];
  logLevel?: string;
  /** Overrides logLevel; tests pass a silent logger. */
  logger?: Logger;
}

export interface ControlPlane {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** `http://host:port` of the REST API; set by start(). */
  readonly apiUrl: string;
  /** Bound gRPC port; set by start(). */
  readonly grpcPort: number;
  /** PEM of the CA agents must trust; set by start(). */
  readonly caPem: string;
  /** Where the first start wrote the initial admin token. */
  readonly adminTokenFile: string;
  /** The admin token if this start created it (first start only), for in-process callers. */
  readonly initialAdminToken: string | undefined;
}

export const DEFAULT_API_LISTEN = '127.0.0.1:8080';
export const DEFAULT_GRPC_LISTEN = '0.0.0.0:8443';

/** Splits `host:port` / `[v6]:port`; throws VALIDATION_FAILED naming `flag`. */
export function parseListen(value: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) {
    throw new ControlPlaneError('VALIDATION_FAILED', `${flag} must be HOST:PORT, got "${value}"`, {
      details: [{ path: flag, message: 'must be HOST:PORT' }],
    });
  }
  return { host: (m[1] ?? m[2])!, port };
}

export function createControlPlane(options: ControlPlaneOptions): ControlPlane {
  const apiAddr = parseListen(options.apiListen ?? DEFAULT_API_LISTEN, '--api-listen');
  const grpcAddr = parseListen(options.grpcListen ?? DEFAULT_GRPC_LISTEN, '--grpc-listen');
  const log = options.logger ?? pino({ level: options.logLevel ?? 'info' });
  const adminTokenFile = join(options.dataDir, 'initial-admin-token');

  let store: Store | undefined;
  let api: FastifyInstance | undefined;
  let grpc: AgentGrpcServer | undefined;
  let apiUrl = '';
  let grpcPort = 0;
  let caPem = '';
  let initialAdminToken: string | undefined;

  async function stop(): Promise<void> {
    await grpc?.close();
    await api?.close();
    store?.close();
    grpc = undefined;
    api = undefined;
    store = undefined;
  }

  return {
    get apiUrl() {
      return apiUrl;
    },
    get grpcPort() {
      return grpcPort;
    },
    get caPem() {
      return caPem;
    },
    get initialAdminToken() {
      return initialAdminToken;
    },
    adminTokenFile,
    stop,
    async start() {
      try {
        await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
        store = createStore({ path: options.dbPath ?? join(options.dataDir, 'bulkhead.db') });
        const pki = await createPki({ dir: join(options.dataDir, 'ca'), sans: options.tlsSans });
        caPem = pki.caPem;
        const streams = createStreamRegistry();
        const engine: Engine = createEngine({ store, pki, streams, log });

        initialAdminToken = engine.bootstrapAdminToken();
        if (initialAdminToken !== undefined) {
          await writeFile(adminTokenFile, `${initialAdminToken}\n`, { mode: 0o600 });
          log.info({ file: adminTokenFile }, 'created the initial admin API token');
        }

        api = await createApi({ engine, log });
        await api.listen({ host: apiAddr.host, port: apiAddr.port });
        const bound = api.server.address() as AddressInfo;
        const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
        apiUrl = `http://${host}:${bound.port}`;

        grpc = createGrpcServer({ engine, pki, streams, log });
        const grpcHost = grpcAddr.host.includes(':') ? `[${grpcAddr.host}]` : grpcAddr.host;
        grpcPort = await grpc.listen(`${grpcHost}:${grpcAddr.port}`);
        log.info({ api: apiUrl, grpcPort }, 'control plane listening');
      } catch (err) {
        await stop();
        throw err;
      }
    },
  };
}
