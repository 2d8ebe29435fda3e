/*
 * Direct I/O helpers shared by the op log (storage/op-log.ts) and the brick
 * (storage/brick.ts). Both write data that is not read back soon with O_DIRECT, from a
 * buffer they keep and reuse: on this kind of machine a MiB copied into new page-cache
 * pages cost 1.6 to 2.3 ms of CPU against 0.2 into memory already in use, and page-cache
 * copies were the largest single item of a storage node's CPU per MiB written.
 *
 * O_DIRECT wants the buffer's address, the file offset and the length aligned. Node cannot
 * allocate an aligned buffer, so `alignedBuffer` finds an aligned start inside a larger one
 * by trying O_DIRECT writes to a probe file from successive offsets (a malloc'd buffer is
 * aligned to 16 bytes).
 */
import { constants as fsc, promises as fsp } from 'node:fs';

/** O_DIRECT's alignment of buffer, offset and length: a page, which covers devices of
 * 512-byte and 4 KiB logical blocks. */
export const DIRECT_ALIGN = 4096;

export const roundUp = (n: number, to: number) => Math.ceil(n / to) * to;
export const roundDown = (n: number, to: number) => Math.floor(n / to) * to;

/**
 * A buffer of `bytes` whose start O_DIRECT accepts, found by trying 4 KiB O_DIRECT writes
 * to `probeFile` (created, then removed) from successive offsets of a larger one; null
 * where the file system refuses O_DIRECT.
 */
export async function alignedBuffer(probeFile: string, bytes: number): Promise<Buffer | null> {
  const raw = Buffer.allocUnsafeSlow(bytes + DIRECT_ALIGN);
  raw.fill(0, 0, 2 * DIRECT_ALIGN);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(probeFile, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_DIRECT, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EINVAL') return null;
    throw e;
  }
  try {
    for (let k = 0; k < DIRECT_ALIGN; k += 8) {
      try {
        await fh.write(raw, k, DIRECT_ALIGN, 0);
        return raw.subarray(k, k + bytes);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
      }
    }
    return null;
  } finally {
    await fh.close();
    await fsp.rm(probeFile, { force: true });
  }
}
