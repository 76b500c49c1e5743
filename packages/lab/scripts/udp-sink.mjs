// Receives UDP datagrams (e.g. syslog) on 127.0.0.1:<port> inside a lab namespace and appends
// each one as a line to <file>. Prints "listening <port>" once bound.

import dgram from 'node:dgram';
import { appendFileSync } from 'node:fs';

const [port, file] = process.argv.slice(2);
const socket = dgram.createSocket('udp4');
socket.on('message', (msg) =>
  appendFileSync(file, `${msg.toString('utf8').replace(/\n/g, '\\n')}\n`),
);
socket.bind(Number(port), '127.0.0.1', () => console.log(`listening ${socket.address().port}`));
