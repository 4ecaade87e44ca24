#pragma once
// Memory-mapped reader for GGUF files, versions 2 and 3 (the format llama.cpp writes).
//
// The whole file is mapped read-only; metadata is parsed into owned values, tensor data stays
// in the mapping and GgufTensor::data points into it (valid while the GgufFile lives).
// Every count, length, size and offset read from the file is checked against the file size
// before anything is allocated, so a damaged or hostile file gives a snapvk::Error naming
// the problem, never a crash or a huge allocation.
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "host/gguf/ggml_types.h"
#include "host/gguf/gguf_value.h"

namespace snapvk {

struct GgufKv {
  std::string key;
  GgufValue value;
};

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  uint32_t n_dims = 0;
  uint64_t ne[4] = {1, 1, 1, 1};  // ne[0] is contiguous; unused dims are 1
  uint64_t offset = 0;            // from the start of the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the mapping

  uint64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }  // checked at load
  std::string shape_string() const;                                      // "[64, 512]"
};

class GgufFile {
 public:
  // Maps and parses the file. Throws snapvk::Error ("<path>: <problem>") on any failure.
  static GgufFile open(const std::string& path);
  // Parses a GGUF image already in memory (`name` stands for the path in messages). The bytes
  // are borrowed, not copied: they must outlive the GgufFile and its tensors' data pointers.
  static GgufFile from_memory(const void* data, size_t size, const std::string& name);

  GgufFile(GgufFile&& other) noexcept;
  GgufFile& operator=(GgufFile&& other) noexcept;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section

  // ---- metadata ----
  const std::vector<GgufKv>& metadata() const { return kvs_; }  // in file order
  bool has(std::string_view key) const { return find(key) != nullptr; }
  const GgufValue* find(std::string_view key) const;

  // Typed getters: `def` if the key is missing; snapvk::Error if it has an incompatible type or
  // the value does not fit. Integers convert between widths and signedness with range checks;
  // get_float accepts f32, f64 and integers.
  uint64_t get_uint(std::string_view key, uint64_t def) const;
  int64_t get_int(std::string_view key, int64_t def) const;
  float get_float(std::string_view key, float def) const;
  bool get_bool(std::string_view key, bool def) const;
  std::string get_string(std::string_view key, std::string def) const;
  // Arrays: empty if the key is missing.
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<float> get_float_array(std::string_view key) const;  // any numeric elements
  std::vector<int32_t> get_int_array(std::string_view key) const;  // integer elements, range-checked

  // As above, but a missing key throws "<path>: missing key 'X'".
  uint64_t require_uint(std::string_view key) const;
  int64_t require_int(std::string_view key) const;
  float require_float(std::string_view key) const;
  bool require_bool(std::string_view key) const;
  std::string require_string(std::string_view key) const;
  std::vector<std::string> require_string_array(std::string_view key) const;
  std::vector<int32_t> require_int_array(std::string_view key) const;

  // ---- tensors ----
  const std::vector<GgufTensor>& tensors() const { return tensors_; }  // in file order
  const GgufTensor* find_tensor(std::string_view name) const;
  // Throws if the tensor is missing or its shape differs from expected_shape (ne order,
  // trailing 1s ignored): "<path>: tensor 'X' has shape [64, 32], expected [64, 64]".
  const GgufTensor& require_tensor(std::string_view name, std::initializer_list<uint64_t> expected_shape) const;

  // One line: version, key and tensor counts, data size, architecture and name.
  std::string describe() const;

 private:
  GgufFile() = default;
  void parse();
  void release() noexcept;
  const GgufValue& require(std::string_view key) const;
  std::string what(std::string_view key) const;  // "<path>: key 'X'"

  std::string path_;
  const uint8_t* base_ = nullptr;  // the mapping, or the borrowed bytes (nullptr if none)
  bool mapped_ = false;            // base_ is our mapping (unmapped on release)
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<GgufKv> kvs_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;

  friend class GgufParser;
};

}  // namespace snapvk
