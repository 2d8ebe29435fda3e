/*
 * Revoked credentials (issue 13; docs/security.md, "Issue, rotate, revoke").
 *
 * A mount credential is a certificate the cluster's CA signed, good until it expires.
 * `dfs credential revoke` puts its serial number in the Redis hash KEY_REVOKED (with the
 * admin login: a proxy's Redis user may only read it), and every proxy refuses a request
 * made with a revoked certificate (403 FORBIDDEN), on new connections and on those already
 * open, from its next look at the hash: within REVOKED_POLL_MS.
 *
 * Why a list in Redis and not a CRL file: every proxy must see a revocation at once, and a
 * CRL would have to be signed and copied to each proxy's host (and Node reads `crl` only
 * when a server is made, so a new one means a restart). The list names serial numbers
 * only, so it says nothing about who holds what; it is bounded (REVOKED_MAX) because Redis
 * is distrusted, and a proxy that cannot read it keeps the last list it read. Process
 * certificates (node, proxy, admin) are not revoked this way: they are renewed with the CA.
 */
import type Redis from 'ioredis';
import { KEY_REVOKED } from '../common/redis-keys';
import { normalizeSerial } from '../common/tls';
import type { Logger } from '../common/log';

/** How often a proxy reads the list. */
export const REVOKED_POLL_MS = 1000;
/** The most serial numbers a proxy keeps from the list. */
export const REVOKED_MAX = 100_000;

export class RevokedSerials {
  private serials: ReadonlySet<string> = new Set();
  private timer: NodeJS.Timeout | null = null;
  private failing = false;

  constructor(
    private readonly redis: Pick<Redis, 'hkeys'>,
    private readonly logger: Logger,
  ) {}

  /** Whether a certificate with this serial number is revoked. */
  has(serial: string | null): boolean {
    return serial !== null && this.serials.has(serial);
  }

  get size(): number {
    return this.serials.size;
  }

  async refresh(): Promise<void> {
    const keys = await this.redis.hkeys(KEY_REVOKED);
    const next = new Set<string>();
    for (const key of keys) {
      const serial = normalizeSerial(key);
      if (serial === null) continue;
      if (next.size >= REVOKED_MAX) {
        this.logger.warn({ kept: REVOKED_MAX, listed: keys.length }, 'revoked credentials: the list is longer than a proxy keeps; the rest are ignored');
        break;
      }
      next.add(serial);
    }
    if (next.size !== this.serials.size || [...next].some((s) => !this.serials.has(s))) {
      this.logger.info({ revoked: next.size }, 'revoked credentials: list changed');
    }
    this.serials = next;
  }

  /** Reads the list now and then every REVOKED_POLL_MS; a failed read keeps the last list. */
  async start(): Promise<void> {
    const tick = (): Promise<void> =>
      this.refresh().then(
        () => {
          if (this.failing) this.logger.info('revoked credentials: the list is readable again');
          this.failing = false;
        },
        (err: Error) => {
          if (!this.failing) this.logger.warn({ err: err.message }, 'revoked credentials: cannot read the list; keeping the last one read');
          this.failing = true;
        },
      );
    await tick();
    this.timer = setInterval(() => void tick(), REVOKED_POLL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
