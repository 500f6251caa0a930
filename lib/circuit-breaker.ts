export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. */
  failures: number
  /** Milliseconds the circuit stays open before one probe call is let through (half-open). */
  cooldownMs: number
}

export type CircuitState = 'closed' | 'open' | 'half-open'

/**
 * Stops calling a store that keeps failing: once open, calls fail at once without touching Redis (no timeouts to
 * wait out, no load on a struggling server). After the cooldown one probe goes through; its success closes the
 * circuit, its failure opens it again.
 */
export class CircuitBreaker {
  private current: CircuitState = 'closed'
  private consecutiveFailures = 0
  private openedAt = 0
  private probing = false

  constructor (private readonly options: CircuitBreakerOptions) {}

  get state (): CircuitState {
    return this.current
  }

  /** Whether a call may go to the store now; in half-open, only the one probe may. */
  allow (): boolean {
    if (this.current === 'closed') return true
    if (this.current === 'open') {
      if (Date.now() - this.openedAt < this.options.cooldownMs) return false
      this.current = 'half-open'
    }
    if (this.probing) return false
    this.probing = true
    return true
  }

  succeeded (): void {
    this.consecutiveFailures = 0
    this.probing = false
    this.current = 'closed'
  }

  failed (): void {
    this.consecutiveFailures++
    this.probing = false
    if (this.current === 'half-open' || this.consecutiveFailures >= this.options.failures) {
      this.current = 'open'
      this.openedAt = Date.now()
    }
  }
}
