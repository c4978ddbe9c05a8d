// Safetensors I/O: lazy, validated reading of single and sharded checkpoints, atomic writing in
// the reference layout, and conversions between raw tensor bytes and typed arrays. The pieces
// live in ./safetensors/; this module is the public surface.

export { SafetensorsError } from './safetensors/errors.js';
export {
  type SafetensorsDtype,
  type RawTensor,
  type TensorTypedArray,
  DTYPE_BYTES,
  elementCount,
  isSafetensorsDtype,
  toFloat32,
  toBigInt64,
  toInt32,
  fromTypedArray,
  float16ToFloat32,
  float32ToFloat16,
  bfloat16ToFloat32,
  float32ToBFloat16,
} from './safetensors/dtype.js';
export { type TensorInfo, type TensorInput, MAX_HEADER_BYTES } from './safetensors/header.js';
export { type TensorSource, SafetensorsFile, deserializeSafetensors, readSafetensors } from './safetensors/read.js';
export { serializeSafetensors, writeSafetensors } from './safetensors/write.js';
export {
  type ShardedWriteOptions,
  type ShardedWriteResult,
  ShardedSafetensors,
  openCheckpoint,
  writeShardedSafetensors,
} from './safetensors/sharded.js';
