import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createNftDriver, type NftDriver } from '@bulkhead/nftables';
import type { Logger } from 'pino';
import { createDataplane, type Dataplane } from './dataplane.js';
import { createEndpoints, type Lookup } from './endpoints.js';
import { ensureIdentity, loadIdentity } from './enroll.js';
import { AgentError } from './errors.js';
import { createAgentMetrics } from './metrics.js';
import type { Failsafe, FlowTableOptions } from './render.js';
import { type BackoffOptions, createBackoff, describeError } from './retry.js';
import { secureStateDir } from './state.js';
import { createSyncClient, type KeepaliveOptions, type SyncClient } from './sync.js';
import { type DriftWatch, watchDrift } from './watch.js';

export { parseHostPort } from './endpoints.js';

export const AGENT_VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

export interface AgentOptions {
  /**
   * HOST:PORT of the control plane's gRPC endpoint (`[v6]:port` for IPv6 literals); several
   * (array or comma-separated) are tried in turn. Names are resolved again on every round.
   */
  controlPlane: string | string[];
  /** Tests: resolves control-plane names instead of the system resolver. */
  lookup?: Lookup;
  /** gRPC keepalive on the Sync stream; default 10 s ping, 10 s timeout. */
  keepalive?: KeepaliveOptions;
  /** PEM of the CA behind the control plane's server certificate. */
  caPem: string;
  /** Needed only while the state dir holds no identity yet. */
  bootstrapToken?: string;
  stateDir: string;
  hostname: string;
  addresses: string[];
  labels: Record<string, string>;
  /** Failsafe admin access; undefined = none. */
  admin?: { cidrs: string[]; port: number };
  /** Where to serve /metrics; undefined = no metrics server. */
  metricsListen?: { host: string; port: number };
  telemetryIntervalMs: number;
  nftBackend: 'auto' | 'libnftables' | 'nft';
  serverName: string;
  logger: Logger;
  /** Kernel flow sets; default 65536 elements per set, 1 h timeout. */
  flowTable?: FlowTableOptions;
  /** Cap on flow keys waiting to be sent; default 50000. */
  maxPendingFlows?: number;
  /** Between compares of the kernel table's structure with the desired one; default 5 s. */
  driftCheckIntervalMs?: number;
  /** Run `nft monitor` for immediate notice of foreign changes; default true. */
  nftMonitor?: boolean;
  /** Tests: a driver to use instead of createNftDriver. */
  driver?: NftDriver;
  /** Retry delays of enrolment and of the Sync stream; default 1 s base, 60 s cap. */
  backoff?: BackoffOptions;
  /**
   * The agent cannot go on without an operator (the control plane refused the enrolment:
   * bad token, hostname or label) and has stopped trying; the rules in the kernel stay.
   * Default: log it.
   */
  onFatal?: (err: AgentError) => void;
}

export interface Agent {
  /**
   * Restores the persisted rules, serves metrics, then enrols (if needed) and syncs in the
   * background. Throws AgentError CONFIG_INVALID when there is neither identity nor token.
   */
  start(): Promise<void>;
  /** Closes the stream and the metrics server. The nftables rules stay as they are. */
  stop(): Promise<void>;
  readonly dataplane: Dataplane;
  /** Bound address of the metrics server once started. */
  readonly metricsAddress: AddressInfo | undefined;
}

export function createAgent(options: AgentOptions): Agent {
  const { logger } = options;
  // The failsafe output rule follows the control plane's addresses: every resolution (each
  // round of connection attempts) updates the entries that resolved; one that did not keeps
  // its last addresses (a DNS hiccup must not cut the agent off).
  const cpAddresses = new Map<string, Failsafe['controlPlane']>();
  const failsafeAddresses = () => [...cpAddresses.values()].flat();
  const endpoints = createEndpoints([options.controlPlane].flat(), {
    lookup: options.lookup,
    logger,
    onResolved(found) {
      const byEntry = new Map<string, Failsafe['controlPlane']>();
      for (const e of found) {
        byEntry.set(e.entry, [
          ...(byEntry.get(e.entry) ?? []),
          { address: e.address, port: e.port },
        ]);
      }
      for (const [entry, list] of byEntry) cpAddresses.set(entry, list);
      if (byEntry.size > 0) void dataplane?.setControlPlane(failsafeAddresses());
    },
  });
  const driver = options.driver ?? createNftDriver({ backend: options.nftBackend });
  const metrics = createAgentMetrics();
  let dataplane: Dataplane | undefined;
  let sync: SyncClient | undefined;
  let metricsAddress: AddressInfo | undefined;
  let stopped = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let watch: DriftWatch | undefined;

  // At start; later resolutions replace it (onResolved above).
  async function controlPlaneFailsafe(): Promise<Failsafe['controlPlane']> {
    await endpoints.resolveAll();
    const all = failsafeAddresses();
    if (all.length === 0) logger.warn('cannot resolve the control plane; no failsafe rule for it');
    return all;
  }

  const enrolBackoff = createBackoff(options.backoff);
  const onFatal =
    options.onFatal ?? ((err: AgentError) => logger.fatal({ error: err.message }, 'giving up'));

  async function enrolAndSync(): Promise<void> {
    if (stopped) return;
    try {
      const identity = await ensureIdentity({
        target: () => endpoints.next(),
        caPem: options.caPem,
        serverName: options.serverName,
        bootstrapToken: options.bootstrapToken,
        hostname: options.hostname,
        addresses: options.addresses,
        labels: options.labels,
        agentVersion: AGENT_VERSION,
        stateDir: options.stateDir,
        logger,
      });
      if (stopped) return;
      sync = createSyncClient({
        endpoints,
        keepalive: options.keepalive,
        serverName: options.serverName,
        identity,
        dataplane: dataplane!,
        stateDir: options.stateDir,
        hostname: options.hostname,
        addresses: options.addresses,
        agentVersion: AGENT_VERSION,
        telemetryIntervalMs: options.telemetryIntervalMs,
        logger,
        onConnectedChange: (up) => metrics.setConnected(up),
        backoff: options.backoff,
      });
      await sync.start();
    } catch (err) {
      if (err instanceof AgentError && err.code === 'ENROLL_REFUSED') {
        onFatal(err);
        return;
      }
      // One line per attempt, no stack: a control plane that is down or a name that does
      // not resolve is expected here, and the message says which.
      const retryInMs = enrolBackoff.next();
      logger.warn({ ...describeError(err), retryInMs }, 'enrolment failed; retrying');
      retryTimer = setTimeout(() => void enrolAndSync(), retryInMs);
    }
  }

  return {
    get dataplane() {
      if (!dataplane) throw new AgentError('CONFIG_INVALID', 'agent not started');
      return dataplane;
    },
    get metricsAddress() {
      return metricsAddress;
    },
    async start() {
      await secureStateDir(options.stateDir);
      if (!options.bootstrapToken && !(await loadIdentity(options.stateDir))) {
        throw new AgentError(
          'CONFIG_INVALID',
          `no identity in ${options.stateDir}: give --bootstrap-token or --bootstrap-token-file for the first enrolment`,
        );
      }
      dataplane = createDataplane({
        driver,
        stateDir: options.stateDir,
        failsafe: { controlPlane: await controlPlaneFailsafe(), admin: options.admin },
        logger,
        flowTable: options.flowTable,
        maxPendingFlows: options.maxPendingFlows,
        onCounters: (c) => metrics.observeCounters(c),
        onFlows: (read) => metrics.observeFlows(read),
        onFlowsDropped: (n) => metrics.observeFlowsDropped(n),
        onApply: (u, r) => metrics.observeApply(u, r),
        onTamper: (d) => metrics.observeTamper(d),
      });
      const { flows } = dataplane;
      metrics.pendingFlowsFrom(() => flows.size);
      // Enforce the last known rules before anything that needs the network.
      const restored = await dataplane.restore();
      logger.info({ restored }, 'dataplane restored');
      if (options.metricsListen) {
        const { host, port } = options.metricsListen;
        metricsAddress = await metrics.listen(host, port).catch((err: NodeJS.ErrnoException) => {
          // A second agent on the host is the usual cause: a flag to change, not a crash.
          const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.message;
          throw new AgentError('CONFIG_INVALID', `--metrics-listen ${host}:${port}: ${why}`, {
            cause: err,
          });
        });
        logger.info({ address: metricsAddress }, 'metrics listening');
      }
      // Last: a start that failed above (a busy metrics port) leaves no nft monitor behind.
      watch = watchDrift({
        dataplane,
        logger,
        intervalMs: options.driftCheckIntervalMs,
        // A driver given by a test is no kernel to watch.
        monitor: options.nftMonitor ?? options.driver === undefined,
      });
      void enrolAndSync();
    },
    async stop() {
      stopped = true;
      clearTimeout(retryTimer);
      watch?.stop();
      await sync?.stop();
      await metrics.close();
      await dataplane?.persisted();
      // Deliberately no flush: the kernel keeps enforcing the last rule set.
      driver.close();
      logger.info('agent stopped; nftables rules left in place');
    },
  };
}
