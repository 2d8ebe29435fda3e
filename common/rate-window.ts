/* A rate (bytes a second, or anything a second) over a sliding window of samples of a
 * running total: what a full sync reports and what `dfs verify` shows. */

export class RateWindow {
  private readonly samples: Array<{ atMs: number; total: number }> = [];

  constructor(private readonly windowMs: number) {}

  /** Notes the total at `atMs` and answers the rate over the window ending there (0 until
   * two samples lie apart in time). */
  note(atMs: number, total: number): number {
    this.samples.push({ atMs, total });
    // Keep one sample at or before the window's start, so the span covers the window.
    while (this.samples.length > 2 && atMs - this.samples[1]!.atMs >= this.windowMs) this.samples.shift();
    const first = this.samples[0]!;
    const spanMs = atMs - first.atMs;
    return spanMs > 0 ? ((total - first.total) * 1000) / spanMs : 0;
  }
}
