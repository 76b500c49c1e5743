// The boot loader (`bulkhead-agent --restore-only`): puts the persisted last-known-good policy
// back into nftables before the network is up, so a rebooted host is never open while the
// agent starts. Reads the state dir only (policy.bin and dataplane.json, what the agent
// applied and what it rendered it with); must not touch the network nor enrol, and writes
// nothing but the kernel table (and the state it read, unchanged, after a load).
import type { NftDriver } from '@bulkhead/nftables';
import type { Logger } from 'pino';
import { createDataplane, type Rendering, type RestoreOutcome } from './dataplane.js';
import { AgentError } from './errors.js';
import { DEFAULT_FLOW_TABLE } from './render.js';
import { readFileIfExists, statePath } from './state.js';

export interface BootRestoreOptions {
  stateDir: string;
  driver: NftDriver;
  logger: Logger;
}

/**
 * Loads policy.bin into `table inet bulkhead` unless the kernel already holds exactly it:
 * 'none' when nothing is persisted, 'failed' when nftables refused (the kernel keeps what it
 * had). Without dataplane.json (written by agents before it existed) the failsafe holds only
 * the fixed rules (loopback, established, neighbour discovery): no admin or control-plane
 * rule until the agent starts.
 */
export async function bootRestore(options: BootRestoreOptions): Promise<RestoreOutcome> {
  const { stateDir, driver, logger } = options;
  const rendering = await readRendering(stateDir, logger);
  const dataplane = createDataplane({ driver, stateDir, logger, ...rendering });
  const outcome = await dataplane.restore();
  // A restore that applied rewrites the same state: let it land before the process exits.
  await dataplane.persisted();
  return outcome;
}

async function readRendering(stateDir: string, logger: Logger): Promise<Rendering> {
  const file = statePath(stateDir, 'rendering');
  const text = await readFileIfExists(file);
  if (!text) {
    logger.warn({ file }, 'no failsafe settings persisted; restoring without admin access rules');
    return { failsafe: { controlPlane: [], admin: undefined }, flowTable: DEFAULT_FLOW_TABLE };
  }
  try {
    const r = JSON.parse(text.toString('utf8')) as Partial<Rendering>;
    return {
      failsafe: {
        controlPlane: r.failsafe?.controlPlane ?? [],
        admin: r.failsafe?.admin ?? undefined,
      },
      flowTable: r.flowTable ?? DEFAULT_FLOW_TABLE,
    };
  } catch (err) {
    throw new AgentError('STATE_IO', `cannot parse ${file}`, { cause: err });
  }
}
