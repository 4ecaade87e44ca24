#pragma once
// The knowledge packs `snapvk serve --packs DIR` offers: the `*.svkv` files in DIR (what
// `snapvk pack` writes, docs/packs.md), by name = file stem. A pack is read and checked (format,
// checksum, model fingerprint, KV type, that the slots' context holds it) on its first use and
// kept in memory, so a request naming it loads the bytes of a Pack already parsed; a file
// changed on disk (size or modification time) is read again. What is kept is bounded: past
// max_bytes the least recently used packs are let go (a job or slot holding one keeps it). Every refusal is an ApiError with
// param "pack" (device memory running out stays a snapvk::Error): a name is never a path, so no
// request reaches a file outside DIR.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "host/model/model.h"
#include "host/pack/pack.h"
#include "host/server/openai.h"

namespace snapvk::server {

// A pack as the server holds it: read and checked once, shared by the jobs and the slot that
// hold it (a slot continues a conversation only with the very same object).
struct ServedPack {
  std::string name;
  Pack pack;
  uint64_t cache_bytes = 0;  // device bytes of a slot's KV cache holding it (KvCache::bytes_after_restore)
};

class PackLibrary {
 public:
  // Throws snapvk::Error (InvalidArgument) when `dir` is not a directory. kv_types, n_ctx,
  // n_batch: the slots' sessions (a pack must fit them).
  // max_bytes: host bytes of packs kept in memory at most (their files' sizes; the last one read
  // is kept even when larger).
  PackLibrary(const Model& model, std::filesystem::path dir, KvTypes kv_types, uint32_t n_ctx, uint32_t n_batch,
              uint64_t max_bytes = kDefaultMaxBytes);
  static constexpr uint64_t kDefaultMaxBytes = 1ull << 30;

  // What /metrics reports.
  struct Stats {
    uint64_t packs = 0, bytes = 0;      // kept in memory now
    uint64_t loads = 0, evictions = 0;  // files read and checked; packs let go for room
  };
  Stats stats();
  // Throws snapvk::Error (InvalidArgument) when `dir` is not a directory: the CLI calls it before
  // the model loads, so a wrong --packs fails fast.
  static void check_dir(const std::filesystem::path& dir);

  // The pack `name`: 404 when DIR has no such pack, 400 for a bad name or a pack that does not
  // load here (corrupted, another model, another KV type, longer than the context), 500 when
  // the file cannot be read.
  std::shared_ptr<const ServedPack> get(const std::string& name);
  // The names of the packs in DIR now, sorted.
  std::vector<std::string> names() const;
  const std::filesystem::path& dir() const { return dir_; }

 private:
  struct Entry {
    std::filesystem::file_time_type mtime;
    uintmax_t size = 0;
    std::shared_ptr<const ServedPack> pack;
    uint64_t last_used = 0;
  };
  void evict_to_fit(const std::string& keep);  // under mu_
  const Model& model_;
  std::filesystem::path dir_;
  KvTypes kv_types_;
  uint32_t n_ctx_, n_batch_;
  uint64_t max_bytes_;
  std::mutex mu_;
  std::map<std::string, Entry> cache_;  // checked packs by name
  uint64_t tick_ = 0;
  Stats stats_;
};

}  // namespace snapvk::server
