#pragma once
// Synthetic Llama-family models: any shape, deterministic random weights, a small SentencePiece
// vocabulary, written as standard GGUF files that snapvk and llama.cpp load. They stand in for
// real checkpoints in tests and benchmarks, where only the shape and the arithmetic matter.
//
//   SynthShape s = *synth_preset("small-gqa");
//   s.weight_type = GgmlType::Q8_0;
//   write_synth_gguf(s, "small.gguf");
//
// Weights are scaled so the network is numerically sane at any depth: matrices N(0, 1/fan_in)
// (unit-variance outputs for unit-variance inputs), norms 1 + N(0, 0.1^2), embeddings N(0, 1)
// (N(0, 1/n_embd) when tied to the output, so logits stay of order 1), qwen2 biases N(0, 0.2^2), qwen3 and gemma3 q/k
// norms as the other norms; gemma3 embeddings N(0, 1/n_embd) (Gemma scales them by sqrt(n_embd)). "N" is a bounded
// integer-only approximation (synth.cpp), so the bytes are the same on every platform. Each row draws from its own
// generator seeded by (seed, tensor name, row), so a file is also the same whatever the thread count.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/gguf/ggml_types.h"

namespace snapvk {

class GgufFile;

struct SynthShape {
  std::string arch = "llama";   // or "qwen2" (q/k/v biases, NEOX rope), "qwen3" (per-head q/k norms, NEOX rope),
                                // "gemma3" (q/k norms, post-norms, GELU, sliding-window layers)
  uint32_t sliding_window = 0;  // gemma3: attention.sliding_window (required there)
  uint32_t swa_pattern = 6;     // gemma3: layer l slides when l % swa_pattern < swa_pattern - 1
  uint32_t n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_ff = 0, n_vocab = 0, n_ctx = 0;
  uint32_t head_dim = 0;  // 0: n_embd / n_head
  float rope_base = 10000.0f;
  GgmlType weight_type = GgmlType::F16;  // matrices; norms and biases are always f32
  std::optional<GgmlType> embd_type;     // token_embd; unset: weight_type
  bool tied_output = false;              // no output.weight: the lm head is token_embd
  uint64_t seed = 1;

  uint32_t head_size() const { return head_dim ? head_dim : (n_head ? n_embd / n_head : 0); }
  GgmlType embedding_type() const { return embd_type.value_or(weight_type); }
};

// Fewest vocabulary entries a synthetic model may have: <unk>, <s>, </s>, 256 byte tokens, and a
// few pieces ("▁" and some letters).
constexpr uint32_t kSynthMinVocab = 264;

// Throws snapvk::Error naming the first problem: zero or inconsistent sizes, an unknown
// architecture, a type snapvk cannot compute with, rows that are not whole blocks of the
// weight type (K-quants need n_embd and n_ff, and head_dim * n_head, multiples of 256).
void check_synth_shape(const SynthShape& s);

// Named shapes: "tiny", "small-gqa", "155m", "1b", "8b-attn". nullptr for an unknown name.
const SynthShape* synth_preset(std::string_view name);
std::vector<std::string> synth_preset_names();

// "dim=256,layers=4,heads=8,kv_heads=4,ff=704,vocab=4096,ctx=32768,arch=llama,head_dim=64,
// rope_base=10000,tied=1,seed=7" (gemma3 also swa=N, swa_pattern=N). dim, layers, heads, ff and vocab are required;
// kv_heads defaults to heads, ctx to 4096. Throws snapvk::Error for an unknown key, a malformed value or a shape that
// check_synth_shape rejects.
SynthShape parse_synth_shape(const std::string& spec);

// Parameters (elements of all tensors) and the GGUF file size in bytes, metadata included.
uint64_t synth_param_count(const SynthShape& s);
uint64_t synth_file_bytes(const SynthShape& s);

// The tokenizer pieces: <unk>, <s>, </s>, <0x00>..<0xFF>, "▁", letters, digits, punctuation,
// English words and subwords (each with all its prefixes, so SentencePiece merges can build it),
// then "▁w<N>" filler up to n_vocab. Scores fall with the id. n_vocab >= kSynthMinVocab.
struct SynthVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // tokenizer.ggml.token_type
};
SynthVocab synth_vocab(uint32_t n_vocab);

// Writes the model; tensors are made one at a time while the file is written, so peak memory is
// about the largest tensor, not the model. Throws snapvk::Error (check_synth_shape, I/O).
void write_synth_gguf(const SynthShape& s, const std::string& path);

// Writes `src` with every 2-D weight matrix (name ending in ".weight") converted to `type`:
// 1-D tensors (norms, biases, rope factors) stay as they are, as do matrices whose rows are not
// whole blocks of `type` and tensors of types snapvk cannot dequantize. All metadata is copied;
// general.file_type is set to match. Tensors are converted one at a time from the mapping.
void rewrite_gguf(const GgufFile& src, GgmlType type, const std::string& path);

}  // namespace snapvk
