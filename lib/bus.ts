import { randomBytes } from 'node:crypto'
import type { Cluster, Redis } from 'ioredis'
import type { ThrottledLog } from './throttled-log'

/** What one instance tells the others to drop from their in-process tier. */
export type BusMessage =
  | { kind: 'ids', ids: readonly string[] }
  | { kind: 'tags', tags: readonly string[] }
  | { kind: 'pattern', glob: string }

export interface BusListener {
  /** Another instance changed or invalidated these entries. */
  apply: (message: BusMessage) => void
  /**
   * The subscription was lost or is back: messages may have been missed (pub/sub does not replay), so nothing held
   * locally can be trusted.
   */
  reset: () => void
}

interface Envelope { from: string, message: BusMessage }

/**
 * Invalidations between instances, over Redis pub/sub on `<prefix>:bus`. One extra connection per instance
 * subscribes; publishing uses the store's own connection. While the subscriber is not connected, `connected` is
 * false and the in-process tier must neither serve nor fill: an invalidation sent meanwhile would never reach it.
 */
export class InvalidationBus {
  readonly instance = randomBytes(8).toString('base64url')
  private subscribed = false
  private closed = false

  private constructor (
    private readonly publisher: Redis | Cluster,
    private readonly subscriber: Redis | Cluster,
    private readonly channel: string,
    private readonly log: ThrottledLog,
    private readonly listener: BusListener
  ) {}

  /** Subscribes in the background; the tier stays bypassed until the first subscription is confirmed. */
  static start (client: Redis | Cluster, prefix: string, log: ThrottledLog, listener: BusListener): InvalidationBus {
    const subscriber = client.duplicate()
    const bus = new InvalidationBus(client, subscriber, prefix + ':bus', log, listener)
    subscriber.on('message', (channel: string, text: string) => { if (channel === bus.channel) bus.receive(text) })
    subscriber.on('ready', () => { bus.subscribe() })
    // A connection that drops, whatever the cause, may have missed messages.
    subscriber.on('close', () => { bus.lost() })
    subscriber.on('error', (error: Error) => { log.warn('bus', { err: error }, 'cache invalidation bus connection error; the in-process tier is bypassed until it reconnects') })
    if (subscriber.status === 'ready') bus.subscribe()
    else if (subscriber.status === 'wait') subscriber.connect().catch(() => {})
    return bus
  }

  /** Resolves once subscribed, or after timeoutMs: a bus that is late only delays the tier, never the app. */
  async ready (timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.subscribed && !this.closed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
    return this.subscribed
  }

  /** True while the subscription is live: only then may the in-process tier be used. */
  get connected (): boolean {
    return this.subscribed
  }

  /** Tells the other instances; a failure is logged, not thrown: the caller's own change already succeeded. */
  publish (message: BusMessage): void {
    const envelope: Envelope = { from: this.instance, message }
    this.publisher.publish(this.channel, JSON.stringify(envelope)).catch((error: unknown) => {
      this.log.warn('bus-publish', { err: error }, 'cache invalidation could not be published to the other instances; their in-process copies expire with memory.ttl')
    })
  }

  async close (): Promise<void> {
    this.closed = true
    this.lost()
    await this.subscriber.quit().catch(() => this.subscriber.disconnect())
  }

  private subscribe (): void {
    if (this.closed) return
    this.subscriber.subscribe(this.channel).then(() => {
      if (this.closed || this.subscribed) return
      // Whatever was held before the subscription (re)started may have missed messages.
      this.listener.reset()
      this.subscribed = true
    }, (error: unknown) => {
      this.log.warn('bus', { err: error }, 'cache invalidation bus could not subscribe; the in-process tier is bypassed')
    })
  }

  private lost (): void {
    if (!this.subscribed) return
    this.subscribed = false
    this.listener.reset()
  }

  private receive (text: string): void {
    const envelope = parseEnvelope(text)
    if (envelope === undefined) {
      // Someone else publishing on the channel, or another version of the plugin: the safe reading is "anything changed".
      this.log.warn('bus-message', { message: text.slice(0, 200) }, 'unreadable cache invalidation message; dropping the in-process tier')
      this.listener.reset()
      return
    }
    if (envelope.from === this.instance) return
    this.listener.apply(envelope.message)
  }
}

function parseEnvelope (text: string): Envelope | undefined {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return undefined
  }
  const { from, message } = (parsed ?? {}) as Partial<Envelope>
  if (typeof from !== 'string' || typeof message !== 'object' || message === null) return undefined
  const strings = (value: unknown): boolean => Array.isArray(value) && value.every((item) => typeof item === 'string')
  if (message.kind === 'ids' && strings(message.ids)) return { from, message }
  if (message.kind === 'tags' && strings(message.tags)) return { from, message }
  if (message.kind === 'pattern' && typeof message.glob === 'string') return { from, message }
  return undefined
}
