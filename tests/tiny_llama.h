#pragma once
// A tiny llama shape (dim 64, 2 layers, 4/2 heads, ff 128, vocab 300) for the device-free checks
// of numbers from files and options: as small GGUF files with hostile edits (TinyGguf), and as a
// hand-built ModelConfig and MemoryQuery (as `snapvk profile --dry-run` builds them).
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "host/gguf/gguf.h"
#include "host/gguf/gguf_writer.h"
#include "host/model/model.h"
#include "host/session/memory_model.h"

namespace snapvk::test {

// Writes the GGUF files into a scratch directory, removed with it.
struct TinyGguf {
  TinyGguf() : dir(std::filesystem::temp_directory_path() / ("snapvk-tiny-llama-" + std::to_string(getpid()))) {
    std::filesystem::create_directories(dir);
  }
  ~TinyGguf() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  // The tiny llama config with `edit` applied; token_embd is [emb_cols, vocab_rows] of
  // `emb_type`, zeros. No other tensors: from_gguf reads only the metadata and token_embd's row
  // count.
  std::string config(const std::string& name, const std::function<void(GgufWriter&)>& edit, uint64_t vocab_rows = 300,
                     GgmlType emb_type = GgmlType::F32, uint64_t emb_cols = 64) {
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    w.set_uint32("llama.embedding_length", 64);
    w.set_uint32("llama.block_count", 2);
    w.set_uint32("llama.attention.head_count", 4);
    w.set_uint32("llama.attention.head_count_kv", 2);
    w.set_uint32("llama.feed_forward_length", 128);
    w.set_uint32("llama.context_length", 256);
    if (edit) edit(w);
    const uint64_t bytes = row_bytes(emb_type, emb_cols) * vocab_rows;
    std::vector<uint8_t> zeros(bytes);
    w.add_tensor("token_embd.weight", emb_type, {emb_cols, vocab_rows}, zeros.data(), zeros.size());
    const std::string path = (dir / name).string();
    w.write(path);
    return path;
  }
  ModelConfig load(const std::string& name, const std::function<void(GgufWriter&)>& edit, uint64_t vocab_rows = 300,
                   GgmlType emb_type = GgmlType::F32, uint64_t emb_cols = 64) {
    return ModelConfig::from_gguf(GgufFile::open(config(name, edit, vocab_rows, emb_type, emb_cols)));
  }
  std::filesystem::path dir;
};

// The config of the tiny GGUF above, built by hand.
inline ModelConfig tiny_config() {
  ModelConfig c;
  c.arch_name = "llama";
  c.n_embd = 64, c.n_layer = 2, c.n_head = 4, c.n_head_kv = 2, c.head_dim = 16, c.n_ff = 128, c.n_vocab = 300;
  c.n_ctx_train = 256, c.n_rot = 16;
  return c;
}

inline MemoryQuery tiny_query() {
  MemoryQuery q;
  q.prompt_len = 100, q.n_ctx = 128, q.n_batch = 32;
  return q;
}

}  // namespace snapvk::test
