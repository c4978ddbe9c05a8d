// The Measured table of a compare.md, and the check both compare tests make on it: every cell of
// every method row filled with a real value.

import assert from 'node:assert/strict';

/** Header cells and each body row's cells of compare.md's "## Measured" table, after checking every cell is filled. */
export function filledMeasuredTable(md: string, methods: readonly string[]): { header: string[]; rows: string[][] } {
  const measured = md.slice(md.indexOf('## Measured'), md.indexOf('## Ratings'));
  const lines = measured.split('\n').filter((l) => l.startsWith('|'));
  const header = lines[0]!
    .split('|')
    .slice(1, -1)
    .map((c) => c.trim());
  assert.equal(header.length, 12);
  const body = lines.slice(2);
  assert.deepEqual(
    body.map((l) => l.split('|')[1]!.trim()),
    methods,
  );
  const rows = body.map((line) => {
    const cells = line
      .split('|')
      .slice(1, -1)
      .map((c) => c.trim());
    assert.equal(cells.length, header.length, line);
    for (const [i, c] of cells.entries())
      assert.ok(c !== '' && !/NaN|undefined|null|Infinity|failed|^-$/.test(c), `${header[i]} of ${cells[0]}: "${c}"`);
    return cells;
  });
  return { header, rows };
}
