// Echo server run inside a lab namespace: `node echo-server.mjs <tcp|udp> <port> <address>`.
// Prints one JSON line `{"listening":<port>}` on stdout once bound (the lab waits for it);
// logs each peer on stderr, which the lab sends to the log dir for post-mortems.
import dgram from 'node:dgram';
import net from 'node:net';

const [proto, portArg, address = '::'] = process.argv.slice(2);
const port = Number(portArg);

function ready(boundPort) {
  process.stdout.write(`${JSON.stringify({ listening: boundPort })}\n`);
}

function fail(err) {
  process.stdout.write(`${JSON.stringify({ error: err.code ?? err.message })}\n`);
  process.exit(1);
}

if (proto === 'tcp') {
  const server = net.createServer((socket) => {
    process.stderr.write(`tcp peer ${socket.remoteAddress} ${socket.remotePort}\n`);
    // Peers vanish when a test kills a client or a rule drops it; that is not a server error.
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  server.on('error', fail);
  server.listen({ port, host: address }, () => ready(server.address().port));
} else if (proto === 'udp') {
  const socket = dgram.createSocket(net.isIPv4(address) ? 'udp4' : 'udp6');
  socket.on('error', fail);
  socket.on('message', (msg, rinfo) => {
    process.stderr.write(`udp peer ${rinfo.address} ${rinfo.port}\n`);
    socket.send(msg, rinfo.port, rinfo.address);
  });
  socket.bind({ port, address }, () => ready(socket.address().port));
} else {
  fail(new Error(`unknown protocol ${proto}`));
}
