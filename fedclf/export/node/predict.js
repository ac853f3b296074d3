// Runs a fedclf model converted to a TensorFlow.js graph model, in Node.
//
//   node predict.js <model_dir> <pixels.bin> <out.json> <N> <H> <W> <C>
//
// <pixels.bin> holds N*H*W*C raw uint8 pixels (row-major NHWC); the model
// takes them as float32 0..255 (the converted `pixels` signature applies the
// model's own normalization). Writes {"logits": [[...]], "classes": [...],
// "backend": ...} to <out.json>: a file, not stdout, because TensorFlow.js
// prints advice to stdout when it runs in Node without tfjs-node.
//
// Pure-JS @tensorflow/tfjs ships no file loader for Node (that lives in
// tfjs-node, whose native binary cannot be installed offline), so the model
// is read through the small IO handler below.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function fileSystemHandler(modelDir) {
  return {
    load: async () => {
      const modelJSON = JSON.parse(
          fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8'));
      return tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
        const specs = [];
        const shards = [];
        for (const group of manifest) {
          specs.push(...group.weights);
          for (const shard of group.paths) {
            shards.push(fs.readFileSync(path.join(modelDir, shard)));
          }
        }
        const bytes = Buffer.concat(shards);
        // A Node Buffer may be a view into a larger pool: copy out exactly
        // its bytes.
        return [specs, bytes.buffer.slice(bytes.byteOffset,
                                          bytes.byteOffset + bytes.length)];
      });
    },
  };
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 7) {
    throw new Error(
        'usage: node predict.js <model_dir> <pixels.bin> <out.json> N H W C');
  }
  const [modelDir, pixelsPath, outPath, ...dims] = args;
  const shape = dims.map(Number);
  const pixels = fs.readFileSync(pixelsPath);
  const expected = shape.reduce((a, b) => a * b, 1);
  if (pixels.length !== expected) {
    throw new Error(`${pixelsPath} holds ${pixels.length} bytes, ` +
                    `expected ${expected} for shape [${shape}]`);
  }
  await tf.setBackend('cpu');
  const model = await tf.loadGraphModel(fileSystemHandler(modelDir));
  const input = tf.tensor(Float32Array.from(pixels), shape, 'float32');
  const logits = model.predict(input);
  const result = {
    logits: await logits.array(),
    classes: await logits.argMax(-1).array(),
    backend: tf.getBackend(),
    tfjs_version: tf.version.tfjs,
  };
  fs.writeFileSync(outPath, JSON.stringify(result));
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
