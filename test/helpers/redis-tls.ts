/**
 * A TLS-only redis-server for tests, with throwaway certificates made at test time by openssl in a temp dir:
 * a CA, a server certificate for 127.0.0.1 (SAN IP:127.0.0.1) signed by it, a client certificate for mutual TLS,
 * and a second, unrelated CA (what a client that does not trust ours has).
 *
 * The server runs with `--port 0`: it has no plain TCP listener (and no unix socket), so anything that talks to it
 * talks TLS.
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { promisify } from 'node:util'
import { freePort } from './redis'
import { ServerProcess, probePid } from './server-process'

const run = promisify(execFile)
const LOOPBACK = '127.0.0.1'
const DAY = '1'

export interface Certificates {
  dir: string
  /** PEM of the CA that signed the server and client certificates. */
  ca: string
  /** PEM of another CA, which signed nothing here. */
  otherCa: string
  /** Client certificate and key (PEM), signed by `ca`, for `tls-auth-clients yes`. */
  clientCert: string
  clientKey: string
  /** File paths, for redis-server and NODE_EXTRA_CA_CERTS. */
  files: { ca: string, serverCert: string, serverKey: string }
}

async function openssl (dir: string, args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir })
}

/** A self-signed CA: `<name>.key`, `<name>.crt`. */
async function makeCa (dir: string, name: string, subject: string): Promise<void> {
  await openssl(dir, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', DAY, '-subj', subject,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'
  ])
}

/** A leaf `<name>.key`, `<name>.crt` signed by the CA `ca`, with the given extensions. */
async function makeLeaf (dir: string, name: string, subject: string, extensions: string[], serial: number): Promise<void> {
  await openssl(dir, [
    'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject
  ])
  await writeFile(join(dir, `${name}.ext`), extensions.join('\n') + '\n')
  await openssl(dir, [
    'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', String(serial),
    '-days', DAY, '-out', `${name}.crt`, '-extfile', `${name}.ext`
  ])
}

/** Makes the certificates in a new temp dir; `removeCertificates` deletes it. */
export async function makeCertificates (): Promise<Certificates> {
  const dir = await mkdtemp(join(tmpdir(), 'cache-tls-'))
  try {
    await makeCa(dir, 'ca', '/CN=fastify-response-cache throwaway test CA')
    await makeCa(dir, 'other-ca', '/CN=an unrelated CA')
    await makeLeaf(dir, 'server', `/CN=${LOOPBACK}`, [
      `subjectAltName=IP:${LOOPBACK}`,
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth'
    ], 2)
    await makeLeaf(dir, 'client', '/CN=cache client', [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=clientAuth'
    ], 3)
    const read = async (file: string): Promise<string> => await readFile(join(dir, file), 'utf8')
    return {
      dir,
      ca: await read('ca.crt'),
      otherCa: await read('other-ca.crt'),
      clientCert: await read('client.crt'),
      clientKey: await read('client.key'),
      files: { ca: join(dir, 'ca.crt'), serverCert: join(dir, 'server.crt'), serverKey: join(dir, 'server.key') }
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }
}

export async function removeCertificates (certificates: Certificates): Promise<void> {
  await rm(certificates.dir, { recursive: true, force: true })
}

export interface TlsRedisOptions {
  /** `tls-auth-clients yes`: clients must present a certificate signed by the CA. Default false. */
  authClients?: boolean
}

export class TlsRedis {
  readonly host = LOOPBACK
  readonly port: number
  /** `rediss://127.0.0.1:<port>` */
  readonly url: string
  readonly #server: ServerProcess

  private constructor (port: number, server: ServerProcess) {
    this.port = port
    this.url = `rediss://${LOOPBACK}:${port}`
    this.#server = server
  }

  get pid (): number {
    return this.#server.pid
  }

  /**
   * Starts redis-server with TLS on a free loopback port and no plain port; resolves once it answers INFO over TLS
   * with its own pid, which also checks its certificate against the CA for 127.0.0.1.
   */
  static async start (certificates: Certificates, options: TlsRedisOptions = {}): Promise<TlsRedis> {
    let lastError: unknown
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort()
      try {
        const server = await ServerProcess.start({
          name: `TLS redis-server on port ${port}`,
          args: [
            '--port', '0',
            '--tls-port', String(port),
            '--bind', LOOPBACK,
            '--tls-cert-file', certificates.files.serverCert,
            '--tls-key-file', certificates.files.serverKey,
            '--tls-ca-cert-file', certificates.files.ca,
            '--tls-auth-clients', options.authClients === true ? 'yes' : 'no',
            '--save', '',
            '--appendonly', 'no',
            '--daemonize', 'no',
            '--dir', certificates.dir,
            '--loglevel', 'warning'
          ],
          ready: async (pid) => await probePid(() => tlsConnect({
            host: LOOPBACK,
            port,
            ca: certificates.ca,
            ...(options.authClients === true ? { cert: certificates.clientCert, key: certificates.clientKey } : {})
          })) === pid
        })
        return new TlsRedis(port, server)
      } catch (err) {
        lastError = err // the port may have been taken between freePort() and the bind: try another
      }
    }
    throw lastError
  }

  async stop (): Promise<void> {
    await this.#server.stop()
  }
}
