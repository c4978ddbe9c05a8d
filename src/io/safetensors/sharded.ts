// Sharded checkpoints as Hugging Face saves them: `model.safetensors.index.json` maps each tensor
// to one of `model-0000i-of-0000n.safetensors`. Reading resolves names through the index; writing
// splits greedily by a byte budget, as huggingface_hub's split_torch_state_dict_into_shards does.

import { mkdir, open, readdir, stat, unlink, dirname, isAbsolute, join } from '../../storage/index.js';
import { SafetensorsError, ioError } from './errors.js';
import { regularFileSize } from '../files.js';
import type { RawTensor } from './dtype.js';
import { type TensorInfo, type TensorInput, compareCodePoints, layout } from './header.js';
import { SafetensorsFile, type TensorSource, readFully } from './read.js';
import { writeFileAtomic } from '../atomic.js';
import { writeSafetensors } from './write.js';

const MAX_INDEX_BYTES = 100_000_000;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export class ShardedSafetensors implements TensorSource {
  readonly indexPath: string;
  /** The index's `metadata` object (typically `{ total_size }`). */
  readonly metadata: Record<string, unknown>;
  private readonly weightMap: Map<string, string>;
  private readonly shards: Map<string, SafetensorsFile>;

  private constructor(
    indexPath: string,
    metadata: Record<string, unknown>,
    weightMap: Map<string, string>,
    shards: Map<string, SafetensorsFile>,
  ) {
    this.indexPath = indexPath;
    this.metadata = metadata;
    this.weightMap = weightMap;
    this.shards = shards;
  }

  /**
   * Opens an index file and the headers of every shard it names, checking that each tensor is
   * where the index says. Tensor bytes are read only on `read`.
   */
  static async open(indexPath: string): Promise<ShardedSafetensors> {
    const { metadata, weightMap } = await readIndex(indexPath);
    const dir = dirname(indexPath);
    const files = [...new Set(weightMap.values())];
    const opened = await Promise.allSettled(files.map((f) => SafetensorsFile.open(join(dir, f))));
    const shards = new Map<string, SafetensorsFile>();
    opened.forEach((r, i) => {
      if (r.status === 'fulfilled') shards.set(files[i]!, r.value);
    });
    const closeAll = (): Promise<unknown> => Promise.all([...shards.values()].map((s) => s.close().catch(() => undefined)));
    const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await closeAll();
      const reason: unknown = failed.reason;
      throw reason instanceof SafetensorsError
        ? new SafetensorsError(reason.file, `${reason.detail} (shard listed in ${indexPath})`, reason.tensor, { cause: reason })
        : ioError(indexPath, 'opening a shard', reason);
    }
    for (const [name, file] of weightMap) {
      if (!shards.get(file)!.has(name)) {
        await closeAll();
        throw new SafetensorsError(join(dir, file), `tensor listed in ${indexPath} is not in this shard`, name);
      }
    }
    return new ShardedSafetensors(indexPath, metadata, weightMap, shards);
  }

  /** Tensor names in index order. */
  names(): string[] {
    return [...this.weightMap.keys()];
  }

  has(name: string): boolean {
    return this.weightMap.has(name);
  }

  /** Path of the shard holding `name`. */
  shardOf(name: string): string {
    return this.shardFor(name).path;
  }

  /** Location of `name`; `byteOffset` is within the shard file given by `shardOf`. */
  info(name: string): TensorInfo {
    return this.shardFor(name).info(name);
  }

  async read(name: string): Promise<RawTensor> {
    return this.shardFor(name).read(name);
  }

  /** Every tensor the index lists (shards may hold others; the index is authoritative). */
  async readAll(): Promise<Map<string, RawTensor>> {
    const loaded = new Map<string, Map<string, RawTensor>>();
    for (const [file, shard] of this.shards) loaded.set(file, await shard.readAll());
    return new Map(this.names().map((n) => [n, loaded.get(this.weightMap.get(n)!)!.get(n)!]));
  }

  async close(): Promise<void> {
    await Promise.all([...this.shards.values()].map((s) => s.close()));
  }

  private shardFor(name: string): SafetensorsFile {
    const file = this.weightMap.get(name);
    if (file === undefined) throw new SafetensorsError(this.indexPath, 'no such tensor in the weight_map', name);
    return this.shards.get(file)!;
  }
}

async function readIndex(indexPath: string): Promise<{ metadata: Record<string, unknown>; weightMap: Map<string, string> }> {
  let text: string;
  await regularFileSize(
    indexPath,
    (reason) => new SafetensorsError(indexPath, `not a regular file (${reason}); the index must be a regular file`),
    true,
  );
  try {
    const fh = await open(indexPath, 'r');
    try {
      const { size } = await fh.stat();
      if (size > MAX_INDEX_BYTES) throw new SafetensorsError(indexPath, `index is ${size} bytes, over the ${MAX_INDEX_BYTES}-byte limit`);
      const buf = new Uint8Array(size);
      await readFully(fh, buf, 0, indexPath);
      text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw ioError(indexPath, 'reading the index', e);
  }
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(indexPath, `index is not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!isPlainObject(root)) throw new SafetensorsError(indexPath, 'index JSON is not an object');
  const { metadata = {}, weight_map: map } = root;
  if (!isPlainObject(metadata)) throw new SafetensorsError(indexPath, 'index "metadata" is not an object');
  if (!isPlainObject(map)) throw new SafetensorsError(indexPath, 'index has no "weight_map" object');
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== 'string' || file === '') throw new SafetensorsError(indexPath, 'weight_map entry is not a file name', name);
    // An index is data; it must not steer reads outside the checkpoint folder.
    if (isAbsolute(file) || file.includes('\0') || file.split(/[\\/]/).includes('..')) {
      throw new SafetensorsError(indexPath, `shard ${JSON.stringify(file)} is not a path inside the checkpoint folder`, name);
    }
    weightMap.set(name, file);
  }
  return { metadata, weightMap };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw ioError(path, 'stat', e);
  }
}

/**
 * Opens a checkpoint: a `.safetensors` file, an `.index.json` file, or a folder holding
 * `model.safetensors` (preferred) or `model.safetensors.index.json`. `weightsName` picks another
 * file name, e.g. 'adapter_model.safetensors'.
 */
export async function openCheckpoint(path: string, options: { weightsName?: string } = {}): Promise<SafetensorsFile | ShardedSafetensors> {
  let isFile: boolean;
  try {
    isFile = (await stat(path)).isFile();
  } catch (e) {
    throw ioError(path, 'opening the checkpoint', e);
  }
  if (isFile) return path.endsWith('.index.json') ? ShardedSafetensors.open(path) : SafetensorsFile.open(path);
  const name = options.weightsName ?? 'model.safetensors';
  const single = join(path, name);
  if (await exists(single)) return SafetensorsFile.open(single);
  if (await exists(`${single}.index.json`)) return ShardedSafetensors.open(`${single}.index.json`);
  throw new SafetensorsError(path, `checkpoint folder has neither ${name} nor ${name}.index.json`);
}

export interface ShardedWriteOptions {
  /** Most tensor-data bytes per shard (headers not counted, as in huggingface_hub); default 5 GB. */
  maxShardBytes?: number;
  /** File stem: 'model' gives model-00001-of-00002.safetensors and model.safetensors.index.json. */
  baseName?: string;
  /** `__metadata__` written into every shard, e.g. { format: 'pt' }. */
  metadata?: Record<string, string>;
}

export interface ShardedWriteResult {
  /** Paths of the written weight files, in shard order. */
  files: string[];
  /** Path of the index, or undefined when everything fit in one `<base>.safetensors`. */
  indexPath: string | undefined;
  /** Sum of all tensor bytes, as recorded in the index's metadata.total_size. */
  totalSize: number;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Writes a checkpoint into `dir`, split into shards of at most `maxShardBytes` (a tensor larger
 * than that gets a shard to itself), in input order. Like transformers' save_pretrained it writes a
 * single `<base>.safetensors` without an index when one shard suffices, and removes weight files
 * of an earlier save that the new one does not use, so `openCheckpoint` never sees stale data.
 */
export async function writeShardedSafetensors(
  dir: string,
  tensors: TensorInput,
  options: ShardedWriteOptions = {},
): Promise<ShardedWriteResult> {
  const base = options.baseName ?? 'model';
  const maxBytes = options.maxShardBytes ?? 5_000_000_000;
  if (base === '' || /[\\/\0]/.test(base)) throw new SafetensorsError(dir, `baseName ${JSON.stringify(base)} is not a plain file stem`);
  if (!(maxBytes > 0)) throw new SafetensorsError(dir, `maxShardBytes must be positive, got ${maxBytes}`);
  const indexName = `${base}.safetensors.index.json`;
  // Validate everything before the first file is written.
  layout(tensors, options.metadata, join(dir, `${base}.safetensors`));

  const entries: Array<[string, RawTensor]> = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const groups: Array<Array<[string, RawTensor]>> = [[]];
  let current = 0;
  let totalSize = 0;
  for (const entry of entries) {
    const n = entry[1].data.byteLength;
    if (groups.at(-1)!.length > 0 && current + n > maxBytes) {
      groups.push([]);
      current = 0;
    }
    groups.at(-1)!.push(entry);
    current += n;
    totalSize += n;
  }

  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw ioError(dir, 'creating the folder', e);
  }
  const pad = (i: number): string => String(i).padStart(5, '0');
  const names =
    groups.length === 1 ? [`${base}.safetensors`] : groups.map((_, i) => `${base}-${pad(i + 1)}-of-${pad(groups.length)}.safetensors`);
  for (let i = 0; i < groups.length; i++) {
    await writeSafetensors(join(dir, names[i]!), new Map(groups[i]), options.metadata);
  }

  let indexPath: string | undefined;
  if (groups.length > 1) {
    indexPath = join(dir, indexName);
    const weightMap = groups
      .flatMap((g, i) => g.map(([name]): [string, string] => [name, names[i]!]))
      .sort(([a], [b]) => compareCodePoints(a, b));
    // Laid out like save_pretrained's json.dumps(indent=2, sort_keys=True), built by hand since
    // a JS object would reorder integer-like tensor names.
    const lines = weightMap.map(([name, file]) => `    ${JSON.stringify(name)}: ${JSON.stringify(file)}`);
    const json = `{\n  "metadata": {\n    "total_size": ${totalSize}\n  },\n  "weight_map": {\n${lines.join(',\n')}\n  }\n}\n`;
    const bytes = new TextEncoder().encode(json);
    await writeFileAtomic(indexPath, bytes);
  }

  const keep = new Set(names);
  const shardPattern = new RegExp(`^${escapeRegExp(base)}-\\d{5,}-of-\\d{5,}\\.safetensors$`);
  let present: string[];
  try {
    present = await readdir(dir);
  } catch (e) {
    throw ioError(dir, 'listing the folder', e);
  }
  const stale = present.filter(
    (f) =>
      !keep.has(f) &&
      (shardPattern.test(f) || (groups.length > 1 && f === `${base}.safetensors`) || (groups.length === 1 && f === indexName)),
  );
  for (const f of stale) {
    try {
      await unlink(join(dir, f));
    } catch (e) {
      throw ioError(join(dir, f), 'removing a stale weight file', e);
    }
  }
  return { files: names.map((n) => join(dir, n)), indexPath, totalSize };
}
