// Adapters as users download them from the Hub: `--adapter org/name` goes through the Hub client
// (a local 127.0.0.1 server speaking the Hub's API) and repos in the layouts current peft writes
// load with peft's logits: a LoHa adapter (safetensors), a LoRA with lora_bias saved as
// adapter_model.bin (torch.save zip, read by the restricted unpickler), and a VeRA adapter saved
// with save_projection=false as .bin (no projections in the file: regenerated from
// projection_prng_key as peft does).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../../../src/io/safetensors.js';
import { fixture2026Path } from '../../../helpers/fixtures.js';
import { type BinTensor, torchSaveBytes } from '../../../helpers/torchbin_writer.js';
import { peft } from '../../peft.js';

const qwen3 = fixture2026Path('models', 'qwen3');

/** The fixture folder's files, with the weights as adapter_model.bin and config overrides if asked. */
async function repoFiles(
  fixture: string,
  opts: { bin?: boolean; config?: Record<string, unknown>; drop?: string[] } = {},
): Promise<Map<string, Uint8Array>> {
  const dir = fixture2026Path('adapters', 'qwen3', fixture);
  const files = new Map<string, Uint8Array>();
  for (const f of readdirSync(dir))
    if (f === 'README.md' || f === 'adapter_config.json' || f === 'adapter_model.safetensors') files.set(f, readFileSync(join(dir, f)));
  if (opts.config) {
    const cfg = JSON.parse(Buffer.from(files.get('adapter_config.json')!).toString('utf8'));
    files.set('adapter_config.json', Buffer.from(JSON.stringify({ ...cfg, ...opts.config })));
  }
  if (opts.bin || opts.drop) {
    const tensors = await readSafetensors(join(dir, 'adapter_model.safetensors'));
    for (const k of opts.drop ?? []) tensors.delete(k);
    files.delete('adapter_model.safetensors');
    const state: Record<string, BinTensor> = {};
    for (const [k, t] of tensors) state[k] = { dtype: t.dtype as BinTensor['dtype'], shape: t.shape, data: t.data };
    files.set('adapter_model.bin', torchSaveBytes(state, { ordered: true }));
  }
  return files;
}

test('peft forward --adapter org/name: peft 0.20 adapters from the Hub (LoHa, lora_bias as .bin, VeRA save_projection=false as .bin) give peft logits', async () => {
  const repos = new Map<string, { fixture: string; files: Map<string, Uint8Array> }>([
    ['loha', { fixture: 'loha', files: await repoFiles('loha') }],
    ['lora-bias-bin', { fixture: 'lora_bias', files: await repoFiles('lora_bias', { bin: true }) }],
    [
      'vera-noproj-bin',
      {
        fixture: 'vera',
        files: await repoFiles('vera', { bin: true, config: { save_projection: false }, drop: ['base_model.vera_A', 'base_model.vera_B'] }),
      },
    ],
  ]);
  const commit = 'abc123'.padEnd(40, '0');
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const info = /^\/api\/models\/fixture-org\/([\w-]+)\/revision\/main$/.exec(url.pathname);
    if (info && repos.has(info[1]!)) {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ sha: commit, siblings: [...repos.get(info[1]!)!.files.keys()].map((rfilename) => ({ rfilename })) }));
      return;
    }
    const m = /^\/fixture-org\/([\w-]+)\/resolve\/[0-9a-f]{40}\/(.+)$/.exec(url.pathname);
    const data = m ? repos.get(m[1]!)?.files.get(m[2]!) : undefined;
    if (!data) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { etag: `"${m![1]}${m![2]!.replace(/[^\w]/g, '')}${data.length}"`, 'content-length': String(data.length) });
    res.end(req.method === 'HEAD' ? undefined : data);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const tmp = mkdtempSync(join(tmpdir(), 'peft-hub-adapters-'));
  try {
    const env = {
      HF_ENDPOINT: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      HF_HUB_CACHE: join(tmp, 'cache'),
      HF_HUB_OFFLINE: undefined,
      HF_TOKEN: undefined,
    };
    for (const [name, { fixture, files }] of repos) {
      const out = join(tmp, `${name}.safetensors`);
      const r = await peft(
        [
          'forward',
          '--model',
          qwen3,
          '--adapter',
          `fixture-org/${name}`,
          '--batch',
          join(qwen3, 'batch.safetensors'),
          '--out',
          out,
          '--threads',
          '1',
        ],
        env,
      );
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      assert.equal(files.has('adapter_model.bin'), name.endsWith('-bin'));
      const got = toFloat32((await readSafetensors(out)).get('logits')!);
      const want = toFloat32(
        (await readSafetensors(fixture2026Path('adapters', 'qwen3', fixture, 'expected_outputs.safetensors'))).get('logits')!,
      );
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) - 1e-4 * Math.abs(want[i]!));
      assert.ok(worst <= 1e-4, `${name}: logits off peft's by ${worst}`);
    }
  } finally {
    server.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});
