// The agent's TLS to the control plane: what grpc-js's `credentials.createSsl` does (our CA,
// the agent's certificate, ALPN h2, the control plane's name checked), plus session resumption:
// the last session ticket each control-plane address gave is offered on the next connection, so
// a reconnect after a restart skips the certificates (none sent, parsed or verified on either
// side; the control plane's ticket key survives its restarts, pki.ts). The ticket stays in
// memory: an agent that restarts does a full handshake. It lives beside the generated contract
// because the agent, the control plane's tests and the bench all connect with it. Must not know
// the services.
//
// grpc-js 1.14 takes no TLS session; `ChannelCredentials._createSecureConnector` is the
// extension point its own credentials implement, and declared in its typings.
import { type ConnectionOptions, connect, createSecureContext } from 'node:tls';
import { CallCredentials, ChannelCredentials } from '@grpc/grpc-js';

type Connector = ReturnType<ChannelCredentials['_createSecureConnector']>;
type Target = Parameters<ChannelCredentials['_createSecureConnector']>[0];

export interface TlsIdentity {
  caPem: string;
  keyPem: string;
  certPem: string;
}

/** Channel credentials that resume TLS sessions; `serverName` is the name the server proves. */
export function createResumingCredentials(
  identity: TlsIdentity,
  serverName: string,
): ChannelCredentials {
  const secureContext = createSecureContext({
    ca: identity.caPem,
    key: identity.keyPem,
    cert: identity.certPem,
  });
  // The newest ticket per control-plane address (bounded by the addresses configured).
  const sessions = new Map<string, Buffer>();

  class ResumingCredentials extends ChannelCredentials {
    _isSecure(): boolean {
      return true;
    }
    _equals(other: ChannelCredentials): boolean {
      return other === this;
    }
    _createSecureConnector(
      target: Target,
      _options: unknown,
      callCredentials = CallCredentials.createEmpty(),
    ): Connector {
      const address = `${target.authority ?? ''}/${target.path}`;
      return {
        connect: (socket) =>
          new Promise((resolve, reject) => {
            const options: ConnectionOptions = {
              socket,
              secureContext,
              servername: serverName,
              ALPNProtocols: ['h2'],
              session: sessions.get(address),
            };
            const tls = connect(options, () => {
              // A resumed session keeps the verification of the handshake that made it.
              if (!tls.authorized) {
                reject(tls.authorizationError);
                return;
              }
              resolve({ socket: tls, secure: true });
            });
            tls.on('session', (session: Buffer) => sessions.set(address, session));
            // A connection lost (the control plane restarting) keeps its ticket: that is when
            // it is needed. One the server no longer takes costs a full handshake, not a failure.
            tls.on('error', reject);
          }),
        waitForReady: () => Promise.resolve(),
        getCallCredentials: () => callCredentials,
        destroy: () => {},
      };
    }
  }
  return new ResumingCredentials();
}
