import { chmod, mkdir, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { type Logger, pino } from 'pino';
import { createDomains } from './domains.js';
import { ControlPlaneError } from './errors.js';
import { DEFAULT_OFFLINE_AFTER_MS } from './fleet/liveness.js';
import { createStreamRegistry } from './fleet/streams.js';
import { type AgentGrpcServer, bindAgentPort, createGrpcServer, type GrpcLimits } from './grpc.js';
import type { TlsListener } from './grpc-listener.js';
import { createMetrics } from './metrics.js';
import { createPki } from './pki.js';
import {
  createEventExporter,
  type EventExporter,
  type EventExporterOptions,
  parseTarget,
  SiemError,
} from './siem/index.js';
import { createSqliteStores, type Stores } from './store/index.js';

/** How long a stop waits for REST responses still being sent before it cuts them. */
const API_CLOSE_GRACE_MS = 5000;

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
  /** SIEM targets (`--siem` URLs, see src/siem/README.md): every audit entry and denied/would-deny flow. */
  siem?: string[];
  /**
   * Exporter tuning (aggregation window, rate limit, spool size); tests turn aggregation off.
   * TCP/TLS targets spool to `<dataDir>/siem-spool/` unless `spoolDir` says otherwise.
   */
  siemOptions?: Omit<EventExporterOptions, 'logger'>;
  /** Hourly flow buckets and flows not seen for longer are pruned. Default 35. */
  flowRetentionDays?: number;
  /** Most flow rows kept; the least recently seen go first. Default 1,000,000. */
  maxFlowRows?: number;
  /** How often retention runs (it also runs at start). Default one hour. */
  flowPruneIntervalMs?: number;
  /** Handshake/idle timeouts, keepalive, connections per source (DEFAULT_GRPC_LIMITS). */
  grpcLimits?: Partial<GrpcLimits>;
  /** A provision warns about a workload whose rule set passes this many entries. Default 200,000. */
  maxRuleSetEntries?: number;
  /** Largest `PUT /v1/ip-lists/:name` body. Default 32 MiB (other routes: 1 MiB). */
  maxIpListBytes?: number;
  /** Offline agents (`--offline-after`, `--offline-withdraw`): see fleet/liveness.ts. */
  offline?: { afterMs?: number; withdraw?: boolean };
}

export interface StopOptions {
  /**
   * The process exits right after stop: the agents' connections are no longer served but left
   * for the kernel to close at exit, instead of being torn down one by one (~0.3-0.6 ms of CPU
   * each, most of a stop with thousands of agents connected). Agents see the connection drop and
   * reconnect, as they would on an UNAVAILABLE status.
   */
  leaveConnections?: boolean;
}

export interface ControlPlane {
  start(): Promise<void>;
  /** Stops serving, writes what telemetry was taken, closes the store. */
  stop(options?: StopOptions): Promise<void>;
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
  /** Reopens SIEM file targets (SIGHUP after log rotation). */
  reopenFiles(): void;
}

export const DEFAULT_API_LISTEN = '127.0.0.1:8080';
export const DEFAULT_GRPC_LISTEN = '0.0.0.0:8443';
const HOUR_MS = 3_600_000;

/** Checks `--siem` URLs before anything starts; throws VALIDATION_FAILED naming the flag. */
export function checkSiemTargets(urls: string[]): void {
  for (const url of urls) {
    try {
      parseTarget(url);
    } catch (err) {
      if (!(err instanceof SiemError)) throw err;
      throw new ControlPlaneError('VALIDATION_FAILED', `--siem: ${err.message}`, {
        details: [{ path: '--siem', message: err.message }],
        cause: err,
      });
    }
  }
}

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
  const dbPath = options.dbPath ?? join(options.dataDir, 'bulkhead.db');
  checkSiemTargets(options.siem ?? []);

  let store: Stores | undefined;
  let api: FastifyInstance | undefined;
  let grpc: AgentGrpcServer | undefined;
  /** The agents' port, until the gRPC server that serves it owns it. */
  let agentPort: TlsListener | undefined;
  let siem: EventExporter | undefined;
  let pruneTimer: NodeJS.Timeout | undefined;
  let rolloutTimer: NodeJS.Timeout | undefined;
  let stopLiveness: (() => void) | undefined;
  let telemetryWritten: (() => Promise<void>) | undefined;
  let apiUrl = '';
  let grpcPort = 0;
  let caPem = '';
  let initialAdminToken: string | undefined;

  async function stop(options: StopOptions = {}): Promise<void> {
    clearInterval(pruneTimer);
    clearInterval(rolloutTimer);
    stopLiveness?.();
    await (grpc ? grpc.close(options) : agentPort?.close());
    // Telemetry already taken from the streams is written before the database closes.
    await telemetryWritten?.();
    // In-flight requests may finish; a client that stopped reading a response would hold the
    // stop forever, so what is still open after the grace period is cut.
    const cut = setTimeout(() => api?.server.closeAllConnections(), API_CLOSE_GRACE_MS).unref();
    await api?.close();
    clearTimeout(cut);
    // Aggregated flows live in memory until the window ends: send them before leaving.
    await siem?.close();
    store?.close();
    grpc = undefined;
    agentPort = undefined;
    api = undefined;
    siem = undefined;
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
    reopenFiles() {
      siem?.reopen();
    },
    async start() {
      try {
        await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
        // mkdir's mode is masked by the umask and leaves an existing directory alone.
        await chmod(options.dataDir, 0o700);
        const exporter =
          options.siem && options.siem.length > 0
            ? createEventExporter(options.siem, {
                spoolDir: join(options.dataDir, 'siem-spool'),
                ...options.siemOptions,
                logger: log,
              })
            : undefined;
        siem = exporter;
        store = createSqliteStores({
          path: dbPath,
          flowRetentionDays: options.flowRetentionDays,
          maxFlowRows: options.maxFlowRows,
          onAudit: exporter
            ? (e) =>
                exporter.emit({
                  kind: 'audit',
                  at: new Date(e.at),
                  actor: e.actor,
                  action: e.action,
                  target: e.target,
                  details: { id: e.id, before: e.before, after: e.after },
                })
            : undefined,
        });
        const pki = await createPki({ dir: join(options.dataDir, 'ca'), sans: options.tlsSans });
        caPem = pki.caPem;
        const metrics = createMetrics();
        // The agents' port opens before the state loads and the REST API is built (~0.5 s of
        // CPU with a fleet of thousands). After a restart the fleet reconnects at once: what
        // arrives meanwhile waits in the listener's queue, its ClientHello unread, until the
        // gRPC server below serves the port, instead of being refused and retried after a
        // backoff (grpc-listener.ts).
        agentPort = await bindAgentPort({
          host: grpcAddr.host,
          port: grpcAddr.port,
          pki,
          limits: options.grpcLimits,
          metrics,
          log,
        });
        grpcPort = agentPort.port;
        const streams = createStreamRegistry();
        const domains = createDomains({
          stores: store,
          metrics,
          pki,
          streams,
          log,
          events: exporter,
          flowRetentionDays: options.flowRetentionDays,
          maxRuleSetEntries: options.maxRuleSetEntries,
          offline: options.offline,
        });
        const { liveness } = domains;
        // A tenth of the offline time, at most 5 s: the state lags the clock by that much.
        liveness.start(
          Math.min(5_000, (options.offline?.afterMs ?? DEFAULT_OFFLINE_AFTER_MS) / 10),
        );
        stopLiveness = () => liveness.stop();
        domains.metrics.watch({
          agents: domains.fleet.listAgents,
          flowRows: store.visibility.flowCount,
          ingest: domains.fleet.ingest,
          dbPath,
          siem: exporter && (() => exporter.stats()),
        });
        domains.visibility.pruneFlows();
        pruneTimer = setInterval(() => {
          try {
            domains.visibility.pruneFlows();
          } catch (err) {
            log.error({ err }, 'flow retention failed');
          }
        }, options.flowPruneIntervalMs ?? HOUR_MS);
        pruneTimer.unref();
        // A rollout's watch windows are seconds at the least: a one-second tick is exact enough.
        rolloutTimer = setInterval(() => {
          try {
            domains.rollouts.tick();
          } catch (err) {
            log.error({ err }, 'rollout step failed');
          }
        }, 1000);
        rolloutTimer.unref();

        initialAdminToken = domains.access.bootstrapAdminToken();
        if (initialAdminToken !== undefined) {
          await writeFile(adminTokenFile, `${initialAdminToken}\n`, { mode: 0o600 });
          log.info({ file: adminTokenFile }, 'created the initial admin API token');
        }

        // The REST API is built (fastify, its schemas: ~0.3-0.5 s of CPU) before the gRPC server
        // serves the agents' port: fastify's boot, many small async steps, interleaved with a
        // thousand TLS handshakes took seconds of wall time for a fraction of a second of CPU
        // (the process was not healthy meanwhile).
        const { createApi } = await import('./api.js');
        api = await createApi({ domains, log, maxIpListBytes: options.maxIpListBytes });
        telemetryWritten = () => domains.fleet.ingest.idle();
        grpc = createGrpcServer({
          fleet: domains.fleet,
          streams,
          log,
          metrics,
          limits: options.grpcLimits,
          listener: agentPort,
        });
        await api.listen({ host: apiAddr.host, port: apiAddr.port });
        const bound = api.server.address() as AddressInfo;
        const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
        apiUrl = `http://${host}:${bound.port}`;
        log.info({ api: apiUrl, grpcPort }, 'control plane listening');
      } catch (err) {
        await stop();
        throw err;
      }
    },
  };
}
