// Turning one row's growing token list into text that is safe to show: a byte-level tokenizer can
// end a step in the middle of a UTF-8 character, and the tail of the text may be the start of a
// stop string, so both are held back until the next tokens settle them.

/** The text of a row's new tokens, how much of it is final, and whether a stop string ended it. */
export class RowText {
  private emitted = 0;
  /** the final text once a stop string was found (cut before it) */
  private stoppedAt: number | undefined;
  stopString: string | undefined;
  text = '';

  constructor(
    private readonly decode: (ids: readonly number[]) => string,
    private readonly stopStrings: readonly string[],
  ) {}

  get stopped(): boolean {
    return this.stoppedAt !== undefined;
  }

  /** Re-decodes the row after a new token; returns the newly final text ('' if none). */
  update(ids: readonly number[]): string {
    if (this.stoppedAt !== undefined) return '';
    const full = this.decode(ids);
    this.text = full;
    let first: { at: number; s: string } | undefined;
    for (const s of this.stopStrings) {
      const at = full.indexOf(s);
      if (at >= 0 && (first === undefined || at < first.at)) first = { at, s };
    }
    if (first) {
      this.stoppedAt = first.at;
      this.stopString = first.s;
      this.text = full.slice(0, first.at);
      return this.take(first.at);
    }
    return this.take(this.safeEnd(full));
  }

  /** Everything not yet emitted, at the end of generation. */
  flush(): string {
    return this.take(this.stoppedAt ?? this.text.length);
  }

  private take(end: number): string {
    if (end <= this.emitted) return '';
    const piece = this.text.slice(this.emitted, end);
    this.emitted = end;
    return piece;
  }

  private safeEnd(full: string): number {
    let end = full.length;
    // An incomplete multi-byte character decodes to U+FFFD until its last byte arrives.
    while (end > 0 && full.charCodeAt(end - 1) === 0xfffd) end--;
    // A tail that could grow into a stop string waits.
    let hold = 0;
    for (const s of this.stopStrings) {
      for (let k = Math.min(s.length - 1, end); k > hold; k--) {
        if (full.endsWith(s.slice(0, k), end)) {
          hold = k;
          break;
        }
      }
    }
    return end - hold;
  }
}
