// A mail server on loopback for the deployment test: enough SMTP for himalaya (EHLO, AUTH
// PLAIN/LOGIN, MAIL, RCPT, DATA, QUIT). Every message it takes is one JSON line in the log, with the
// credentials the client authenticated with.
//   node smtp-sink.mjs PORT LOG
import { createServer } from 'node:net';
import { appendFileSync } from 'node:fs';

const [port, log] = process.argv.slice(2);
const decode = (b64) => Buffer.from(b64 || '', 'base64').toString('utf8');
const address = (line) => (line.match(/<([^>]*)>/) || [])[1] || '';

createServer((socket) => {
  let buffer = '';
  let mail = { from: '', to: [], auth: null };
  let pending = null; // what the next line is: a DATA line, or an AUTH step
  let data = [];
  const say = (text) => socket.write(text + '\r\n');
  say('220 sink.test ESMTP');
  socket.on('data', (chunk) => {
    buffer += chunk.toString('utf8');
    let at;
    while ((at = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, at).replace(/\r$/, '');
      buffer = buffer.slice(at + 1);
      if (pending === 'data') {
        if (line === '.') {
          appendFileSync(log, JSON.stringify({ ...mail, data: data.join('\n') }) + '\n');
          data = [];
          pending = null;
          mail = { from: '', to: [], auth: mail.auth };
          say('250 queued');
        } else {
          data.push(line.startsWith('..') ? line.slice(1) : line);
        }
        continue;
      }
      if (pending === 'plain') {
        const [, user, password] = decode(line).split('\0');
        mail.auth = { user, password };
        pending = null;
        say('235 authenticated');
        continue;
      }
      if (pending === 'login-user') {
        mail.auth = { user: decode(line), password: '' };
        pending = 'login-password';
        say('334 UGFzc3dvcmQ6');
        continue;
      }
      if (pending === 'login-password') {
        mail.auth.password = decode(line);
        pending = null;
        say('235 authenticated');
        continue;
      }
      const words = line.split(/\s+/);
      switch (words[0].toUpperCase()) {
        case 'EHLO': socket.write('250-sink.test\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n'); break;
        case 'HELO': case 'NOOP': case 'RSET': say('250 ok'); break;
        case 'AUTH':
          if ((words[1] || '').toUpperCase() === 'PLAIN') {
            if (words[2]) {
              const [, user, password] = decode(words[2]).split('\0');
              mail.auth = { user, password };
              say('235 authenticated');
            } else { pending = 'plain'; say('334 '); }
          } else { pending = 'login-user'; say('334 VXNlcm5hbWU6'); }
          break;
        case 'MAIL': mail.from = address(line); say('250 ok'); break;
        case 'RCPT': mail.to.push(address(line)); say('250 ok'); break;
        case 'DATA': pending = 'data'; say('354 end with .'); break;
        case 'QUIT': say('221 bye'); socket.end(); break;
        default: say('502 not implemented');
      }
    }
  });
  socket.on('error', () => {});
}).listen(Number(port), '127.0.0.1');
