#include "host/server/packs.h"

#include <algorithm>

#include "host/kv/kv_cache.h"

namespace snapvk::server {

namespace fs = std::filesystem;

PackLibrary::PackLibrary(const Model& model, fs::path dir, KvTypes kv_types, uint32_t n_ctx, uint32_t n_batch,
                         uint64_t max_bytes)
    : model_(model), dir_(std::move(dir)), kv_types_(kv_types), n_ctx_(n_ctx), n_batch_(n_batch), max_bytes_(max_bytes) {
  check_dir(dir_);
}

void PackLibrary::check_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error(ErrorKind::InvalidArgument, "--packs: '" + dir.string() + "' is not a directory");
}

std::vector<std::string> PackLibrary::names() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir_, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path& f = it->path();
    std::error_code fec;
    if (f.extension() == kPackExtension && it->is_regular_file(fec) && f.stem().string()[0] != '.')
      out.push_back(f.stem().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::shared_ptr<const ServedPack> PackLibrary::get(const std::string& name) {
  check_pack_name(name);
  const fs::path file = dir_ / (name + kPackExtension);
  std::error_code ec;
  const auto status = fs::status(file, ec);
  if (ec || !fs::is_regular_file(status))
    throw ApiError(404, "no pack '" + name + "' in --packs (GET /v1/models lists them)", "pack", "pack_not_found");
  const auto mtime = fs::last_write_time(file, ec);
  const uintmax_t size = ec ? 0 : fs::file_size(file, ec);
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = cache_.find(name);
    if (it != cache_.end() && it->second.mtime == mtime && it->second.size == size) {
      it->second.last_used = ++tick_;
      return it->second.pack;
    }
  }
  // Read and checked outside the lock: other packs' requests do not wait for this file.
  auto sp = std::make_shared<ServedPack>();
  sp->name = name;
  try {
    const std::string label = name + kPackExtension;
    sp->pack = read_pack(read_pack_file(file.string()), label);
    check_pack_model(sp->pack, model_, label);
    if (sp->pack.kv_types != kv_types_)
      throw ApiError(400,
                     "pack '" + label + "': holds a " + kv_types_name(sp->pack.kv_types) + " KV cache, this server's is " +
                         kv_types_name(kv_types_) + " (--kv-type, --kv-type-k, --kv-type-v)",
                     "pack", "pack_mismatch");
    if (sp->pack.state.n_past >= n_ctx_)
      throw ApiError(400,
                     "pack '" + label + "': holds " + std::to_string(sp->pack.state.n_past) +
                         " positions, this server's context holds " + std::to_string(n_ctx_) +
                         " (prompt and answer too; raise -c)",
                     "pack", "context_length_exceeded");
    sp->cache_bytes = KvCache::bytes_after_restore(model_.config(), sp->pack.kv_types, sp->pack.state, n_ctx_, n_batch_);
  } catch (const Error& e) {
    // What the pack reader refuses (InvalidArgument: truncated, corrupted, another model or
    // version) is the request's pack; a file that cannot be read is the server's problem.
    if (e.kind() == ErrorKind::InvalidArgument) throw ApiError(400, e.what(), "pack", "invalid_pack");
    if (e.kind() == ErrorKind::OutOfMemory) throw;  // the device's state, not the pack's: the server maps it by kind
    throw ApiError(500, e.what(), "pack", error_kind_name(e.kind()));
  }
  std::lock_guard<std::mutex> lk(mu_);
  cache_[name] = Entry{mtime, size, sp, ++tick_};
  stats_.loads++;
  evict_to_fit(name);
  return sp;
}

void PackLibrary::evict_to_fit(const std::string& keep) {
  auto bytes = [&] {
    uint64_t sum = 0;
    for (const auto& [n, e] : cache_) sum += e.size;
    return sum;
  };
  while (bytes() > max_bytes_) {
    auto lru = cache_.end();
    for (auto it = cache_.begin(); it != cache_.end(); ++it)
      if (it->first != keep && (lru == cache_.end() || it->second.last_used < lru->second.last_used)) lru = it;
    if (lru == cache_.end()) return;
    cache_.erase(lru);
    stats_.evictions++;
  }
}

PackLibrary::Stats PackLibrary::stats() {
  std::lock_guard<std::mutex> lk(mu_);
  Stats st = stats_;
  st.packs = cache_.size();
  for (const auto& [n, e] : cache_) st.bytes += e.size;
  return st;
}

}  // namespace snapvk::server
