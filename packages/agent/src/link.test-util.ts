// For integration tests on the real kernel (inside `unshare --net`): a libnftables driver and a
// veth link holding 10.2.0.100/24 for the length of a describe block, and a UDP probe whose
// error says whether an output-hook rule dropped it. Not part of the public API.
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createNftDriver, type NftDriver } from '@bulkhead/nftables';
import { afterAll, beforeAll } from 'vitest';

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'ignore' });
}

/** Registers the hooks; `driver()` is valid inside the block's tests. */
export function useTestLink(dev: string): { driver(): NftDriver } {
  let driver: NftDriver | undefined;
  beforeAll(() => {
    driver = createNftDriver({ backend: 'libnftables' });
    ip('link', 'add', dev, 'type', 'veth', 'peer', 'name', `${dev}p`);
    ip('addr', 'add', '10.2.0.100/24', 'dev', dev);
    ip('link', 'set', dev, 'up');
  });
  afterAll(() => {
    try {
      ip('link', 'del', dev);
    } catch {
      // gone with the namespace
    }
    driver?.close();
  });
  return { driver: () => driver! };
}

/** Sends one datagram; the error an output-hook drop gives (EPERM), or undefined. */
export function sendUdp(address: string, port: number): Promise<string | undefined> {
  const sock = createSocket('udp4');
  return new Promise((resolve) => {
    sock.send('x', port, address, (err) => {
      sock.close();
      resolve((err as NodeJS.ErrnoException | null)?.code);
    });
  });
}
