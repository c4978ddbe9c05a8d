// Exports for other runtimes: transformers.js (ONNX folder) and llama.cpp / Ollama (GGUF).

export { ExportError } from './errors.js';
export { loadExportSource, type ExportSource } from './source.js';
export { buildTransformersJsGraph, writeTransformersJs, type ExportedFile } from './transformersjs.js';
export { type OnnxDtype } from './onnx_dtypes.js';
export { ggufModel, ggufLora, modelfile, type GgufType } from './gguf/model.js';
export { encodeGguf, GgmlType, ValueType, type GgufTensor, type MetaValue } from './gguf/writer.js';
